import X86

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes all of `string` to a file descriptor (1: standard output, 2: standard error).
func writeAll(_ string: String, to descriptor: Int32) {
    var string = string
    string.withUTF8 { bytes in
        var done = 0
        while done < bytes.count {
            let n = write(descriptor, bytes.baseAddress! + done, bytes.count - done)
            if n <= 0 { return }
            done += n
        }
    }
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) { writeAll(TerminalText.escaped(string), to: 2) }
}

/// Buffered standard output: listings of a million instructions print in one pass.
struct StandardOutput: TextOutputStream {
    private var buffer = ""
    mutating func write(_ string: String) {
        buffer += TerminalText.escaped(string)
        if buffer.utf8.count > 1 << 16 { flush() }
    }
    mutating func flush() {
        writeAll(buffer, to: 1)
        buffer = ""
    }
}

/// Reads a whole file; the error names the file and what went wrong.
func readFile(_ path: String) throws -> [UInt8] {
    errno = 0
    guard let bytes = FileBytes.read(path) else {
        let reason = errno != 0 ? String(cString: strerror(errno)) : "not a regular file"
        throw InputError("cannot read \(path): \(reason)")
    }
    return bytes
}

/// Monotonic seconds, for timings.
enum Clock {
    static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
}

/// Creates a folder and its parents, like `mkdir -p`.
func makeDirectory(_ path: String) throws {
    var current = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        current += "/" + part
        if mkdir(current, 0o755) != 0 && errno != EEXIST {
            throw InputError("cannot create \(current): \(String(cString: strerror(errno)))")
        }
    }
}

/// Writes a whole file, replacing it.
func writeFile(_ path: String, _ text: String) throws {
    guard let file = fopen(path, "wb") else { throw InputError("cannot write \(path): \(String(cString: strerror(errno)))") }
    defer { fclose(file) }
    var text = text
    let written = text.withUTF8 { fwrite($0.baseAddress, 1, $0.count, file) }
    if written != text.utf8.count { throw InputError("cannot write \(path)") }
}

/// Writes bytes to a file, replacing it.
func writeBytes(_ path: String, _ bytes: [UInt8]) throws {
    guard let file = fopen(path, "wb") else { throw InputError("cannot write \(path)") }
    defer { fclose(file) }
    if bytes.withUnsafeBytes({ fwrite($0.baseAddress, 1, $0.count, file) }) != bytes.count { throw InputError("cannot write \(path)") }
}

/// Runs a program with arguments (no shell); returns its exit status.
@discardableResult
func shell(_ arguments: [String]) -> Int32 {
    var pid: pid_t = 0
    let argv = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    guard posix_spawn(&pid, arguments[0], nil, nil, argv, environ) == 0 else { return -1 }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return (status >> 8) & 0xFF
}

/// Runs a program and returns what it printed.
func capture(_ arguments: [String]) throws -> String {
    let output = "/tmp/sieve-capture-\(getpid())"
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    var pid: pid_t = 0
    let argv = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    guard posix_spawn(&pid, arguments[0], &actions, nil, argv, environ) == 0 else { throw InputError("cannot run \(arguments[0])") }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    defer { unlink(output) }
    return String(decoding: try readFile(output), as: UTF8.self)
}
