#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every file Sieve writes is written whole or not at all (DESIGN §12). A file is staged: its
/// bytes go to a temporary file made by `mkstemp` in the target's own directory (so the rename
/// stays on one file system), every write checked, the original's mode (and owner, where the
/// user may) copied, fsync'd and closed (checked). `commit()` then renames each staged file over
/// its target, in the order staged, and fsyncs the directories. A symbolic link is followed
/// (the file it points to is replaced, the link stays). If anything fails before the renames,
/// the temporary files are removed and every target is as it was.
///
/// A target that exists and is neither a regular file nor a directory (`/dev/stdout`, a FIFO)
/// cannot be replaced: it is written straight through at commit, every write checked.
final class StagedFiles {
    private struct Entry {
        let target: String
        let temporary: String?       // nil: written straight through at commit
        let bytes: [UInt8]
    }
    private var entries: [Entry] = []
    private var committed = false

    init() {}

    deinit { if !committed { discard() } }

    func stage(_ text: String, as path: String) throws { try stage(Array(text.utf8), as: path) }

    /// `like`: a file whose permission bits a new file takes (an executable's, for its patched copy).
    func stage(_ bytes: [UInt8], as path: String, like model: String? = nil) throws {
        var existing = stat()
        let exists = stat(path, &existing) == 0
        if exists && existing.st_mode & S_IFMT == S_IFDIR { throw InputError("cannot write \(path): it is a directory") }
        if exists && existing.st_mode & S_IFMT != S_IFREG {
            entries.append(Entry(target: path, temporary: nil, bytes: bytes))
            return
        }
        let target = try AtomicFile.resolved(path)
        let (directory, name) = AtomicFile.split(target)
        var template = Array("\(directory)/.\(name.prefix(32)).sieve-XXXXXX".utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else { throw AtomicFile.failure("cannot write \(path)") }
        let temporary = String(filling: template)
        var closed = false
        do {
            defer { if !closed { close(descriptor) } }
            if exists {
                // The owner first (it clears set-id bits), then the mode; a user who may not give
                // the file away keeps the group where allowed, and otherwise owns the new file
                // (without the set-id bits, which were the old owner's).
                var mode = existing.st_mode & 0o7777
                if existing.st_uid != geteuid() || existing.st_gid != getegid() {
                    if fchown(descriptor, existing.st_uid, existing.st_gid) != 0 {
                        mode &= ~(S_ISUID | S_ISGID)
                        _ = fchown(descriptor, uid_t.max, existing.st_gid)
                    }
                }
                guard fchmod(descriptor, mode) == 0 else { throw AtomicFile.failure("cannot write \(path)") }
            } else {
                let mask = umask(0)
                umask(mask)
                var source = stat()
                let bits = model.flatMap { stat($0, &source) == 0 ? source.st_mode & 0o777 : nil } ?? 0o666
                guard fchmod(descriptor, bits & ~mask) == 0 else { throw AtomicFile.failure("cannot write \(path)") }
            }
            try AtomicFile.writeAll(bytes, to: descriptor, path: path)
            guard fsync(descriptor) == 0 else { throw AtomicFile.failure("cannot write \(path)") }
            closed = true
            guard close(descriptor) == 0 else { throw AtomicFile.failure("cannot write \(path)") }
        } catch {
            unlink(temporary)
            throw error
        }
        entries.append(Entry(target: target, temporary: temporary, bytes: []))
    }

    /// Puts every staged file in place.
    func commit() throws {
        var directories: [String] = []
        for (k, entry) in entries.enumerated() {
            guard let temporary = entry.temporary else {
                try AtomicFile.writeThrough(entry.bytes, to: entry.target)
                continue
            }
            guard rename(temporary, entry.target) == 0 else {
                let error = AtomicFile.failure("cannot replace \(entry.target)")
                entries.removeFirst(k)     // those already renamed are in place; the rest are discarded
                throw error
            }
            let directory = AtomicFile.split(entry.target).directory
            if !directories.contains(directory) { directories.append(directory) }
        }
        committed = true
        // The renames are durable once the directories are (fsync on a directory is not
        // supported everywhere: EINVAL is not an error).
        for directory in directories {
            let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard descriptor >= 0 else { throw AtomicFile.failure("cannot sync \(directory)") }
            defer { close(descriptor) }
            if fsync(descriptor) != 0 && errno != EINVAL { throw AtomicFile.failure("cannot sync \(directory)") }
        }
    }

    /// Removes the temporary files; the targets stay as they were.
    func discard() {
        for entry in entries { if let temporary = entry.temporary { unlink(temporary) } }
        entries = []
    }
}

enum AtomicFile {
    /// Writes files into a directory (created, with its parents, if missing): each whole or not
    /// at all, and none replaced unless all were written.
    static func write(_ files: [(name: String, bytes: [UInt8])], into directory: String) throws {
        try makeDirectory(directory)
        let staged = StagedFiles()
        for file in files { try staged.stage(file.bytes, as: directory + "/" + file.name) }
        try staged.commit()
    }

    /// Replaces or creates one file, whole or not at all.
    static func write(_ text: String, to path: String) throws { try write(Array(text.utf8), to: path) }

    static func write(_ bytes: [UInt8], to path: String) throws {
        let files = StagedFiles()
        try files.stage(bytes, as: path)
        try files.commit()
    }

    /// The file a path names: a symbolic link's final target (the link is kept), else the path.
    static func resolved(_ path: String) throws -> String {
        var status = stat()
        guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFLNK else { return path }
        guard let real = realpath(path, nil) else { throw failure("cannot write \(path) (a symbolic link that does not resolve)") }
        defer { free(real) }
        return String(cString: real)
    }

    static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }

    static func writeAll(_ bytes: [UInt8], to descriptor: Int32, path: String) throws {
        try bytes.withUnsafeBytes { buffer in
            var done = 0
            while done < buffer.count {
                let n = writeSome(descriptor, buffer.baseAddress! + done, buffer.count - done)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    if n == 0 { errno = EIO }
                    throw failure("cannot write \(path)")
                }
                done += n
            }
        }
    }

    static func writeThrough(_ bytes: [UInt8], to path: String) throws {
        let descriptor = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
        guard descriptor >= 0 else { throw failure("cannot write \(path)") }
        do { try writeAll(bytes, to: descriptor, path: path) } catch {
            close(descriptor)
            throw error
        }
        guard close(descriptor) == 0 else { throw failure("cannot write \(path)") }
    }

    /// An input error naming what failed and errno's reason.
    static func failure(_ what: String) -> InputError {
        InputError("\(what): \(String(cString: strerror(errno)))")
    }
}

/// `write(2)`, named apart from `AtomicFile.write`.
private func writeSome(_ descriptor: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(descriptor, bytes, count)
}

extension String {
    /// The path `mkstemp` or `mkdtemp` filled in.
    init(filling template: [CChar]) {
        self.init(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A policy file held for a read-modify-write (`sieve ban`): an exclusive `flock` on the file,
/// and the contents read through the locked descriptor. A writer replaces the file by renaming a
/// new one over it, so a waiter may wake holding the lock of a file no longer at the path: after
/// locking, the descriptor's device and inode must still be the path's, or it opens the path
/// again. Every `sieve ban` on the file is serialized this way; no lock file is left behind.
/// (The lock is advisory: an editor that rewrites the file meanwhile is not stopped.)
final class LockedFile {
    /// The file the path names (a symbolic link resolved), to replace with `StagedFiles`.
    let target: String
    let contents: [UInt8]
    private var descriptor: Int32

    init(_ path: String) throws {
        target = try AtomicFile.resolved(path)
        (descriptor, contents) = try Self.lock(target, path: path)
    }

    private static func lock(_ target: String, path: String) throws -> (Int32, [UInt8]) {
        while true {
            // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
            let descriptor = open(target, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
            guard descriptor >= 0 else { throw AtomicFile.failure("cannot read \(path)") }
            var held = stat(), current = stat()
            guard fstat(descriptor, &held) == 0, held.st_mode & S_IFMT == S_IFREG else {
                close(descriptor)
                throw InputError("cannot edit \(path): not a regular file")
            }
            var locked: Int32
            repeat { locked = flock(descriptor, LOCK_EX) } while locked != 0 && errno == EINTR
            guard locked == 0 else {
                let error = AtomicFile.failure("cannot lock \(path)")
                close(descriptor)
                throw error
            }
            guard stat(target, &current) == 0, current.st_dev == held.st_dev, current.st_ino == held.st_ino else {
                close(descriptor)    // replaced while waiting: lock the file now at the path
                continue
            }
            do { return (descriptor, try readAll(descriptor, path: path)) } catch {
                close(descriptor)
                throw error
            }
        }
    }

    deinit { unlock() }

    /// Releases the lock (after the replacement is committed, or to give up).
    func unlock() {
        if descriptor >= 0 { close(descriptor) }
        descriptor = -1
    }

    private static func readAll(_ descriptor: Int32, path: String) throws -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw AtomicFile.failure("cannot read \(path)") }
            if n == 0 { return bytes }
            bytes += chunk[..<n]
        }
    }
}
