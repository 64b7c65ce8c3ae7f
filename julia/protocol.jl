# The juliapool wire format, Julia side (see PROTOCOL.md; Python twin: juliapool/protocol.py).
#
#   frame = u32 body_length | body        body = u8 kind | u32 request_id | field*
#   field = u32 length | bytes            (all integers little-endian)
#
# Included into the worker module; stdlib only, Julia 1.5 syntax.

const PROTOCOL_VERSION = "1"
const END_SEQ = "ffffffff"

# Message kinds, one letter on the wire (Python's twin: `Request` and `Reply` in juliapool/protocol.py).
# Requests, Python -> Julia:
const EXEC = 'E'          # module, code, nonce, filename, flags -> output, DISPLAY*, INPUT*, DONE
const COMPLETE = 'C'      # module, code, cursor                 -> RESULT(start, stop, match*)
const INSPECT = 'I'       # module, code, cursor, detail         -> RESULT(found, (mime, data)*)
const IS_COMPLETE = 'K'   # code                                 -> RESULT(status, indent)
const INPUT_REPLY = 'N'   # text: the answer to an INPUT event
const DROP = 'D'          # module                               -> RESULT()
const PING = 'P'          #                                      -> RESULT()
const COLLECT = 'G'       # full collections, on the worker's own task -> RESULT(live bytes)
const QUIT = 'Q'          # exit(0) after flushing
# Replies and events, Julia -> Python:
const HELLO = 'H'         # julia version, pid
const DONE = 'O'          # status, ename, evalue, traceback, retire, (mime, data)*
const DISPLAY = 'M'       # seq, (mime, data)*
const DISPLAY_EVENT = 'U' # seq, action, argument, (mime, data)*: IJulia's clear_output, display ids
const INPUT = 'N'         # prompt, password
const RESULT = 'R'        # the answer to any request but EXEC and QUIT

# EXEC flags (Python's `ExecOptions.flags()`), one letter each.
const FLAG_PRINT_ERRORS = 'p'
const FLAG_NOTEBOOK = 'k'
const FLAG_SOFT_SCOPE = 's'
const FLAG_WANT_RESULT = 'r'
const FLAG_ALLOW_INPUT = 'i'
const FLAG_RESET = 'z'

struct Frame
    kind::Char
    id::UInt32
    fields::Vector{Vector{UInt8}}
end

field_string(f::Frame, i::Int) = String(copy(f.fields[i]))

function encode_frame(kind::Char, id::Integer, fields)::Vector{UInt8}
    body = IOBuffer()
    write(body, UInt8(kind))
    write(body, htol(UInt32(id)))
    for field in fields
        bytes = field isa AbstractString ? Vector{UInt8}(codeunits(field)) : Vector{UInt8}(field)
        write(body, htol(UInt32(length(bytes))))
        write(body, bytes)
    end
    payload = take!(body)
    out = IOBuffer()
    write(out, htol(UInt32(length(payload))))
    write(out, payload)
    return take!(out)
end

function decode_body(body::Vector{UInt8})::Frame
    length(body) >= 5 || error("juliapool protocol: frame body too short")
    kind = Char(body[1])
    id = ltoh(reinterpret(UInt32, body[2:5])[1])
    fields = Vector{UInt8}[]
    pos = 6
    while pos <= length(body)
        pos + 3 <= length(body) || error("juliapool protocol: truncated field length")
        n = Int(ltoh(reinterpret(UInt32, body[pos:pos+3])[1]))
        pos += 4
        pos + n - 1 <= length(body) || error("juliapool protocol: truncated field")
        push!(fields, body[pos:pos+n-1])
        pos += n
    end
    return Frame(kind, id, fields)
end

"Read exactly `n` bytes (fewer only at end of file). A SIGINT while waiting consumes nothing: retry."
function read_exact(io::IO, n::Int)::Vector{UInt8}
    buf = UInt8[]
    while length(buf) < n
        chunk = try
            read(io, n - length(buf))
        catch e
            e isa InterruptException || rethrow()
            continue
        end
        isempty(chunk) && break
        append!(buf, chunk)
    end
    return buf
end

"Read one frame; `nothing` at end of file (the Python side went away)."
function read_frame(io::IO)::Union{Frame,Nothing}
    header = read_exact(io, 4)
    isempty(header) && return nothing
    length(header) == 4 || error("juliapool protocol: truncated frame header")
    n = Int(ltoh(reinterpret(UInt32, header)[1]))
    body = read_exact(io, n)
    length(body) == n || error("juliapool protocol: truncated frame body")
    return decode_body(body)
end

"Flatten a MIME bundle into alternating mime/data fields."
bundle_fields(bundle) = collect(Iterators.flatten((String(k), String(v)) for (k, v) in bundle))
