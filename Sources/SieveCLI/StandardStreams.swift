import X86

// @preconcurrency: the C library's `stdout` is a global var, read once at exit, single-threaded.
#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
@preconcurrency import Darwin
#endif

/// Standard output and error are checked like any file Sieve writes: the first failed write
/// is remembered (later writes are skipped), and at exit the command's status becomes 2 with a
/// message on standard error. A reader that went away (`sieve isa | head`) is not trouble:
/// SIGPIPE keeps its default and ends the process quietly, as it does `cat`; where SIGPIPE is
/// ignored, EPIPE stops the output quietly and the command's own status stands.
enum StandardStreams {
    /// errno of the first failed write to standard output (0: none).
    nonisolated(unsafe) static var outputError: Int32 = 0
    nonisolated(unsafe) static var errorFailed = false

    /// Checks, at exit, what was written through `StandardOutput` and what went through the C
    /// library's `stdout` (`print` without a stream, the argument parser's help and messages).
    static func checkAtExit() {
        atexit {
            if fflush(stdout) != 0 || ferror(stdout) != 0, StandardStreams.outputError == 0 {
                StandardStreams.outputError = errno != 0 ? errno : EIO
            }
            let error = StandardStreams.outputError
            if error != 0 && error != EPIPE {
                writeAll("sieve: error: cannot write standard output: \(String(cString: strerror(error)))\n", to: 2)
                _exit(2)
            }
            if StandardStreams.errorFailed { _exit(2) }
        }
    }
}

/// Writes all of `string` to a file descriptor (1: standard output, 2: standard error), or
/// records why it could not.
func writeAll(_ string: String, to descriptor: Int32) {
    if descriptor == 1 && StandardStreams.outputError != 0 || descriptor == 2 && StandardStreams.errorFailed { return }
    var string = string
    string.withUTF8 { bytes in
        var done = 0
        while done < bytes.count {
            let n = write(descriptor, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                if descriptor == 1 { StandardStreams.outputError = n == 0 ? EIO : errno } else { StandardStreams.errorFailed = true }
                return
            }
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

/// Creates a folder and its parents, like `mkdir -p`; the path must end up a directory.
func makeDirectory(_ path: String) throws {
    var current = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        current += "/" + part
        if mkdir(current, 0o777) != 0 && errno != EEXIST {
            throw InputError("cannot create \(current): \(String(cString: strerror(errno)))")
        }
    }
    try checkDirectory(path)
}

/// Checks, before anything is written, that `path` is a directory or can be made one: it is a
/// directory, or its nearest existing ancestor is a directory it may write in.
func checkCreatableDirectory(_ path: String) throws {
    var status = stat()
    if stat(path, &status) == 0 { return try checkDirectory(path) }
    guard errno == ENOENT else { throw InputError("cannot use \(path): \(String(cString: strerror(errno)))") }
    var ancestor = path
    while true {
        while ancestor.count > 1 && ancestor.hasSuffix("/") { ancestor.removeLast() }
        guard let slash = ancestor.lastIndex(of: "/") else { ancestor = "."; break }
        ancestor = slash == ancestor.startIndex ? "/" : String(ancestor[..<slash])
        if stat(ancestor, &status) == 0 { break }
        guard errno == ENOENT else { throw InputError("cannot use \(path): \(ancestor): \(String(cString: strerror(errno)))") }
    }
    if stat(ancestor, &status) != 0 || status.st_mode & S_IFMT != S_IFDIR {
        throw InputError("cannot create \(path): \(ancestor) is not a directory")
    }
    if access(ancestor, W_OK | X_OK) != 0 { throw InputError("cannot create \(path): \(ancestor): \(String(cString: strerror(errno)))") }
}

/// Checks that a path exists and may be read (a file, or a directory to walk).
func checkReadable(_ path: String) throws {
    guard access(path, R_OK) == 0 else { throw InputError("cannot read \(path): \(String(cString: strerror(errno)))") }
}

private func checkDirectory(_ path: String) throws {
    var status = stat()
    guard stat(path, &status) == 0 else { throw InputError("cannot use \(path): \(String(cString: strerror(errno)))") }
    guard status.st_mode & S_IFMT == S_IFDIR else { throw InputError("cannot use \(path): not a directory") }
}

/// A private directory of scratch files from `mkdtemp` under $TMPDIR (default /tmp), never a
/// predictable or existing path; files in it are created exclusively, and `remove()` deletes
/// them and the directory.
final class ScratchDirectory {
    let path: String
    private var names: [String] = []

    init(_ prefix: String) throws {
        var base = getenv("TMPDIR").map { String(cString: $0) } ?? ""
        if base.isEmpty { base = "/tmp" }
        while base.count > 1 && base.hasSuffix("/") { base.removeLast() }
        var template = Array("\(base)/\(prefix)-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw AtomicFile.failure("cannot create a temporary directory in \(base)")
        }
        path = String(filling: template)
    }

    deinit { remove() }

    /// Creates `name` in the directory (it must not exist) holding `bytes`; returns its path.
    @discardableResult
    func create(_ name: String, _ bytes: [UInt8]) throws -> String {
        let file = path + "/" + name
        let descriptor = open(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw AtomicFile.failure("cannot write \(file)") }
        names.append(name)
        do { try AtomicFile.writeAll(bytes, to: descriptor, path: file) } catch {
            close(descriptor)
            throw error
        }
        guard close(descriptor) == 0 else { throw AtomicFile.failure("cannot write \(file)") }
        return file
    }

    /// Notes a file that a program run in the directory made (so that `remove()` deletes it).
    func adopt(_ name: String) { names.append(name) }

    func remove() {
        for name in names { unlink(path + "/" + name) }
        names = []
        rmdir(path)
    }
}

/// Runs a program with arguments (no shell); returns its exit status.
@discardableResult
func shell(_ arguments: [String]) -> Int32 {
    var pid: pid_t = 0
    let argv = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    guard posix_spawn(&pid, arguments[0], nil, nil, argv, environ) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return exitStatus(status)
}

/// A wait status as a shell shows it: the exit status, or 128 + the signal that ended it.
private func exitStatus(_ status: Int32) -> Int32 {
    status & 0x7F != 0 ? 128 + status & 0x7F : (status >> 8) & 0xFF
}

/// Runs a program and returns what it printed on standard output, and its exit status. The
/// output goes to an unnamed temporary file (made by `mkstemp` under $TMPDIR and unlinked at once).
func capture(_ arguments: [String]) throws -> (output: String, status: Int32) {
    var base = getenv("TMPDIR").map { String(cString: $0) } ?? ""
    if base.isEmpty { base = "/tmp" }
    var template = Array("\(base)/sieve-capture-XXXXXX".utf8CString)
    let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
    guard descriptor >= 0 else { throw AtomicFile.failure("cannot create a temporary file in \(base)") }
    unlink(String(filling: template))
    defer { close(descriptor) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, descriptor, 1)
    var pid: pid_t = 0
    let argv = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    guard posix_spawn(&pid, arguments[0], &actions, nil, argv, environ) == 0 else { throw InputError("cannot run \(arguments[0])") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 12)
    lseek(descriptor, 0, SEEK_SET)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress!, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        bytes += chunk[..<n]
    }
    return (String(decoding: bytes, as: UTF8.self), exitStatus(status))
}
