# Builds the object file of a juliapool system image; juliapool/sysimage.py runs it as
#
#   julia -J <Julia's own image> --sysimage-native-code=yes --output-o OUT.o sysimage.jl STDLIB TRACE
#
# and links OUT.o into a shared library. Julia writes the image when this script ends: everything
# loaded by then (the worker module) and every method compiled by then (the precompile statements
# that TRACE, the --trace-compile output of a worker running a typical workload, lists) is in it.
# The worker's own state (pipes, sessions) is made by `main` at run time, never here.

# With --output-o, Julia skips parts of its own start-up that depend on where it runs.
Base.reinit_stdio()
@eval Sys BINDIR = ccall(:jl_get_julia_bindir, Any, ())::String
@eval Sys STDLIB = $(ARGS[1])
Base.init_load_path()
Base.init_depot_path()

let dir = @__DIR__
    pushfirst!(LOAD_PATH, dir)
    try
        Core.eval(Main, :(using JuliaPoolWorker))
    finally
        filter!(!=(dir), LOAD_PATH)
    end
end

# Statements name types by their modules' paths (Base.Broadcast..., REPL.REPLCompletions..., the
# worker's own): evaluate them where every loaded module is visible under its name. Those naming a
# user's snippet module fail, and are meant to.
module PrecompileArea
    for (_, mod) in Base.loaded_modules
        isdefined(@__MODULE__, nameof(mod)) || Core.eval(@__MODULE__, :(const $(nameof(mod)) = $mod))
    end
end

let done = 0, failed = 0
    for line in eachline(ARGS[2])
        startswith(line, "precompile(") || continue
        try
            Core.eval(PrecompileArea, Meta.parse(line)) ? (done += 1) : (failed += 1)
        catch
            failed += 1
        end
    end
    println("$done methods compiled, $failed statements skipped")
end

# What compiled user code calls but the traced workload only ever ran interpreted (the tiered
# policy's marks): without native code here, each worker compiles them at its first such call.
for f in (JuliaPoolWorker.compile_from_here, JuliaPoolWorker.interpret_from_here)
    precompile(f, ())
end
# The policy's tables of names, looked up with `in` on a name of any type (so never inferred): a
# symbol, or what else a syntax tree puts there (a docstring's macro is `GlobalRef(Core, :@doc)`;
# compiling `in` for it took 3 to 8 ms at a worker's first docstring).
for name in names(JuliaPoolWorker; all = true)
    v = isdefined(JuliaPoolWorker, name) ? getfield(JuliaPoolWorker, name) : nothing
    if v isa Tuple && !isempty(v) && all(x -> x isa Symbol, v)
        foreach(T -> precompile(in, (T, typeof(v))), (Symbol, GlobalRef, Expr))
    end
end
