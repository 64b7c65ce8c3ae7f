# A fresh process state for every plain call. Included into the worker module (JuliaPoolWorker.jl).
#
# After a plain call the next one must see what a new `julia` process would. What can be put back
# cheaply is put back: ENV, the working directory, LOAD_PATH and DEPOT_PATH, the global RNG
# (reseeded, as a new process seeds it). What cannot is reported as a reason word in the `O` frame (PROTOCOL.md), and Python retires the
# worker before it serves anyone else:
#
#   "stdio"   stdout, stderr or stdin was closed or left redirected
#   "package" a package was loaded that the worker did not have (preload it to keep workers)
#   "piracy"  a method was added to a function of another module for types the call does not own
#   "main"    Main's bindings (or its `using` list) changed
#   "task"    work was left behind: tasks, timers, open handles, atexit hooks
#   "cwd"     the working directory could not be restored (it was deleted)
#
# A method for the call's own type (`Base.show(io::IO, p::Point)` with `struct Point` from the same
# call) is not piracy. Finding new methods: Julia's world counter grows by one for every method
# added (or deleted) - checked in src/gf.c `jl_method_table_insert` / `jl_method_table_disable` of
# 1.5 to 1.11. If the new methods of the call's own functions and types account for the whole growth,
# nothing else changed (the common case: a few microseconds). Otherwise the functions the code names
# are looked at, and only if that does not account for it either, every method table. Newer Julia
# (binding partitions, 1.12 on: src/module.c and src/gf.c store a new world for a new global, an
# import, a new generic function) also counts binding changes: there the slower paths decide more
# often, with the same answers. Only 1.5.3 could be run here.
#
# Other internals, with the versions whose source was read: `jl_get_world_counter`, `environ` (libc),
# `jl_module_usings` (1.5 to 1.12, as REPL completion uses it), `Base.atexit_hooks` and
# `Base.loaded_modules` (1.5 to 1.12), `Random.default_rng` (1.3 on; a MersenneTwister before 1.7,
# a TaskLocalRNG from 1.7). Each is guarded, so a Julia without one takes the safe side.

const ORIG_STDIO = Ref{Any}(nothing)
const BASE_ENV = Dict{String,String}()
const BASE_ENV_MARK = Ref{Vector{UInt}}(UInt[])
const BASE_CWD = Ref("")
const BASE_PATHS = Ref{Vector{Vector{String}}}([String[], String[]])  # LOAD_PATH, DEPOT_PATH
const RANDOM_ID = Base.PkgId(Base.UUID("9a3f8284-a2c9-5f02-9a11-845980a1fd5c"), "Random")
# The field of Method that holds the world it was added in: `primary_world` on 1.5 to 1.12.
const WORLD_FIELD = something(findfirst(in((:primary_world, :min_world)), fieldnames(Method)), 0)

world() = ccall(:jl_get_world_counter, UInt, ())
method_world(m::Method) = WORLD_FIELD == 0 ? typemax(UInt) : UInt(getfield(m, WORLD_FIELD))

struct StateBefore
    world::UInt
    main::Vector{Pair{Symbol,Any}}
    main_usings::Int
    work::Int
    atexit::Int
    packages::Int
    rng::Any
    saved_env::Union{Nothing,Dict{String,String}}   # a session's process state, put back after
    saved_cwd::String
end

# ---- ENV and the working directory -----------------------------------------------------------

"""The addresses of the C environment's entries: setenv and unsetenv change them (glibc never frees
a string it handed to environ, so an address is not reused for other contents). ~0.2 us where
Dict(ENV) takes ~40 us; empty where `environ` cannot be read (then ENV is compared in full)."""
function env_mark()::Vector{UInt}
    mark = UInt[]
    Sys.islinux() || return mark
    envp = try unsafe_load(cglobal(:environ, Ptr{Ptr{UInt8}})) catch; return mark end
    push!(mark, UInt(envp))
    envp == C_NULL && return mark
    i = 1
    while (p = unsafe_load(envp, i)) != C_NULL
        push!(mark, UInt(p))
        i += 1
    end
    return mark
end

env_changed() = isempty(BASE_ENV_MARK[]) ? Dict(ENV) != BASE_ENV : env_mark() != BASE_ENV_MARK[]

function set_env!(want::Dict{String,String})
    for k in collect(keys(ENV))
        haskey(want, k) || delete!(ENV, k)
    end
    for (k, v) in want
        get(ENV, k, nothing) == v || (ENV[k] = v)
    end
end

"The worker's own state (after start-up, preloading and warm-up): what every plain call starts from."
function record_baseline()
    empty!(BASE_ENV)
    merge!(BASE_ENV, Dict(ENV))
    BASE_ENV_MARK[] = env_mark()
    BASE_CWD[] = pwd()
    BASE_PATHS[] = [copy(LOAD_PATH), copy(DEPOT_PATH)]
    ORIG_STDIO[] = (stdin, stdout, stderr)
end

function restore_env_and_cwd!()::String
    for (now, want) in zip((LOAD_PATH, DEPOT_PATH), BASE_PATHS[])
        now == want || (empty!(now); append!(now, want))
    end
    if env_changed()
        set_env!(BASE_ENV)
        BASE_ENV_MARK[] = env_mark()    # setenv made new strings
    end
    here = try pwd() catch; "" end
    here == BASE_CWD[] && return ""
    try cd(BASE_CWD[]) catch; return "cwd" end
    return ""
end

# ---- the global RNG ----------------------------------------------------------------------------

random_module() = get(Base.loaded_modules, RANDOM_ID, nothing)

"""Julia 1.5 and 1.6 have one MersenneTwister per thread (`default_rng()`): its indices and seed
tell whether the call used it. From 1.7 on each Task has its own RNG, split off its parent's when
it is made (src/task.c), and every call runs in a new Task: nothing to put back there."""
function rng_mark()
    R = random_module()
    R === nothing && return nothing
    isdefined(R, :default_rng) || return nothing
    rng = Base.invokelatest(R.default_rng)
    isdefined(R, :MersenneTwister) && rng isa R.MersenneTwister || return nothing
    bits = Tuple(getfield(rng, f) for f in fieldnames(typeof(rng)) if isbitstype(fieldtype(typeof(rng), f)))
    return (rng, rng.seed, bits)
end

function reseed_if_used(before)
    before === nothing && return
    rng, seed, bits = before
    now = rng_mark()
    now !== nothing && now[2] === seed && now[3] == bits && return
    Base.invokelatest(random_module().seed!, rng)    # no seed: from the system, as at start-up
end

# ---- Main --------------------------------------------------------------------------------------

# Names the worker itself puts into Main: `IJulia` once a notebook cell ran (notebook.jl). They are
# not the code's changes, so they retire no worker.
const WORKER_MAIN_NAMES = (:IJulia,)

function main_bindings()::Vector{Pair{Symbol,Any}}
    [n => (isdefined(Main, n) && !isconst(Main, n) ? getfield(Main, n) : nothing)
     for n in names(Main; all = true) if !(n in WORKER_MAIN_NAMES)]
end

main_usings() = try length(ccall(:jl_module_usings, Any, (Any,), Main)) catch; 0 end

function main_changed(before::StateBefore)::Bool
    now = main_bindings()
    length(now) == length(before.main) || return true
    for (a, b) in zip(now, before.main)
        (a.first === b.first && a.second === b.second) || return true
    end
    return main_usings() != before.main_usings
end

# ---- left-behind work ------------------------------------------------------------------------

atexit_count() = isdefined(Base, :atexit_hooks) ? length(Base.atexit_hooks) : 0

# ---- capture before, settle after -------------------------------------------------------------

"""Before a call. A plain call (`fresh`) starts from the worker's baseline: a session on this worker
may have changed ENV or the directory; unless the call resets a session (`keep` false), that state
is saved and put back after the call."""
function capture_state(fresh::Bool, keep::Bool)::StateBefore
    saved_env, saved_cwd = nothing, ""
    if fresh
        if env_changed()
            saved_env = keep ? Dict(ENV) : nothing
            set_env!(BASE_ENV)
            BASE_ENV_MARK[] = env_mark()
        end
        here = try pwd() catch; BASE_CWD[] end
        if here != BASE_CWD[]
            saved_cwd = keep ? here : ""
            try cd(BASE_CWD[]) catch end
        end
    end
    return StateBefore(world(), main_bindings(), main_usings(), pending_work(), atexit_count(),
                       length(Base.loaded_modules), fresh ? rng_mark() : nothing, saved_env, saved_cwd)
end

"""After a call: put back what can be put back (plain calls only) and return the reason word why the
worker must be retired, "" if none. `interrupted`: the call was stopped, so its task is gone but an
interrupted `sleep` may leave a timer armed (harmless, not counted)."""
function settle_state(before::StateBefore, mod::Module, code::String, fresh::Bool, interrupted::Bool)::String
    reason = stdio_reason()
    # A package's own methods are many and not the call's: no need to look at them one by one.
    isempty(reason) && length(Base.loaded_modules) > before.packages && (reason = "package")
    if isempty(reason) && world() != before.world
        reason = new_methods_reason(before.world, mod, code)
    end
    isempty(reason) && main_changed(before) && (reason = "main")
    if isempty(reason) && !interrupted && (pending_work() > before.work || atexit_count() > before.atexit)
        reason = "task"
    end
    if fresh
        cwd_reason = restore_env_and_cwd!()
        isempty(reason) && (reason = cwd_reason)
        reseed_if_used(before.rng)
        # (BASE_ENV_MARK stays the baseline's: the sessions' state differs from it, as it should.)
        before.saved_env === nothing || set_env!(before.saved_env)
        isempty(before.saved_cwd) || try cd(before.saved_cwd) catch end
    end
    Base.exit_on_sigint(false)      # the worker's own setting, whatever the code did
    return reason
end

function stdio_reason()::String
    orig = ORIG_STDIO[]
    orig === nothing && return ""
    (stdin === orig[1] && stdout === orig[2] && stderr === orig[3]) || return "stdio"
    (isopen(stdout) && isopen(stderr)) || return "stdio"
    # Julia writes through its own duplicates of fds 1 and 2; C code and child processes use the
    # originals, which code can close underneath (ccall(:close, ...)). F_GETFD = 1 on Linux and macOS.
    for fd in (1, 2)
        ccall(:fcntl, Cint, (Cint, Cint), fd, 1) == -1 && return "stdio"
    end
    return ""
end
