# juliapool worker start-up: load the worker module (JuliaPoolWorker.jl beside this file) and serve.
#
#   julia worker.jl <protocol-version> <REQ fd> <REP fd>
#
# The module is loaded as a package, so that Julia caches it (parsed, lowered) in the user's depot
# (~/.julia/compiled) the first time: later workers load it in a fraction of the ~0.35 s that reading
# its source takes on Julia 1.5. Where no cache can be made, the source is read as before. On a
# juliapool system image (juliapool/sysimage.py) the module is in the image already, compiled, and
# `using` only finds it there.

# Before anything else runs here: which of Base's names Julia's own start-up resolved in Main (on
# 1.5.3: `isempty`, `!==`, `@eval`, `ARGS`, `Base`). Fresh modules resolve them too, so that code
# extending one of them without `import` fails as it fails under `julia -e` (julia/modules.jl).
# Base.isbindingresolved: checked on 1.5; where a newer Julia lacks it, nothing is recorded.
var"#juliapool_main_resolved" = Base.isdefined(Base, :isbindingresolved) ?
    Base.filter(n -> Base.isbindingresolved(Main, n), Base.names(Base)) : Core.Symbol[]

let dir = @__DIR__
    pushfirst!(LOAD_PATH, dir)
    try
        Core.eval(Main, :(using JuliaPoolWorker))
    catch err
        @warn "juliapool: the worker module could not be precompiled; loading its source" err
        Base.include(Main, joinpath(dir, "JuliaPoolWorker.jl"))
    finally
        filter!(!=(dir), LOAD_PATH)     # user code sees Julia's own load path
    end
end

# Decided before `main` runs: compiling `main` would infer the whole worker first.
JuliaPoolWorker.interpret_worker_code()
JuliaPoolWorker.main(copy(ARGS))
