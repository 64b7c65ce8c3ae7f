# When the worker compiles and when it interprets. Included into the worker module (JuliaPoolWorker.jl).

# Julia compiles every method before it first runs it, and compiling the worker's own
# paths (error printing, MIME bundles, completion) takes seconds on first use, far more than
# running them. With JULIAPOOL_INTERPRET_WORKER=1 (the pool's `fast_start`, which the kernel uses)
# the worker's own code runs in Julia's interpreter (as under --compile=min), except the request
# loop compiled at start-up, and the user's code is compiled as usual: we flip
# jl_options.compile_enabled around each snippet. Code that background tasks run between
# requests is then interpreted too (slower, still correct).

const COMPILE_ON = Int8(1)     # JL_OPTIONS_COMPILE_ON
const COMPILE_MIN = Int8(3)    # JL_OPTIONS_COMPILE_MIN
const SWITCH_COMPILE = Ref(false)

# Which field of jl_options is compile_enabled (`nothing` on a Julia without it): found once.
const COMPILE_FIELD = findfirst(==(:compile_enabled), fieldnames(Base.JLOptions))

"""Julia internal: where the C runtime keeps `jl_options.compile_enabled`, the switch that
`--compile=` sets and that `jl_toplevel_eval_flex` and the JIT read before each decision. Found by
name in `Base.JLOptions` (base/options.jl, the Julia mirror that Julia keeps in sync with the C
struct), never by a hard-coded offset, so it is right wherever the field exists; run on 1.5.3.
Where the field is missing (COMPILE_FIELD === nothing) nothing is switched: the worker's own code
is compiled and the compile policy falls back (compile_policy.jl)."""
compile_mode_ptr() = Ptr{Int8}(cglobal(:jl_options) + fieldoffset(Base.JLOptions, COMPILE_FIELD))

function set_compile(mode::Int8)
    SWITCH_COMPILE[] && unsafe_store!(compile_mode_ptr(), mode)
    return nothing
end

"Interpret the worker's own code, unless Julia was started with its own --compile choice."
function interpret_worker_code()
    read_compile_policy()
    wanted = get(ENV, "JULIAPOOL_INTERPRET_WORKER", "0") == "1"
    SWITCH_COMPILE[] = wanted && COMPILE_FIELD !== nothing && unsafe_load(compile_mode_ptr()) == COMPILE_ON
    set_compile(COMPILE_MIN)
    SWITCH_COMPILE[] || warm_up_policy()      # a compiled worker: compile the policy's code now
end

function with_compile(f, mode::Int8)
    SWITCH_COMPILE[] || return f()
    before = unsafe_load(compile_mode_ptr())
    set_compile(mode)
    try
        return f()
    finally
        set_compile(before)
    end
end

compiled(f) = with_compile(f, COMPILE_ON)

# Showing a value is interpreted too: compiling `show` for each new type costs 0.2 to 0.8 s the first
# time (measured: the first `1+1` result 409 ms compiled, 102 ms interpreted; a 1000x1000 matrix
# 831 ms vs 231 ms), which a notebook pays again for every new type it displays.
display_bundle(x) = with_compile(() -> mime_bundle(x), COMPILE_MIN)

include("compile_policy.jl")     # how the user's code runs: compiled, interpreted, or both
