#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Verifier
import X86

/// A scan of many files with one verifier.
///
/// An erratum's first question is "which deployed binaries does this ban break, and where?":
/// the answer is every finding in every file of a corpus, under the new policy.
public struct CorpusScan: Sendable {
    /// One finding in one file.
    public struct Site: Sendable, Equatable {
        /// The segment's name ("LOAD[i]").
        public let segment: String
        /// From the segment's start.
        public let offset: Int
        /// The segment's virtual address plus the offset.
        public let address: UInt64
        /// The instruction's bytes (at most 15; 1 for invalid bytes).
        public let bytes: [UInt8]
        public let kind: FindingKind
        /// The database form, nil when the bytes do not decode.
        public let formIndex: Int?
        /// For `banned`: the policy rule that refused it (nil: nothing trusted it).
        public let ruleIndex: Int?
        public let message: String

        public init(segment: String, offset: Int, address: UInt64, bytes: [UInt8], kind: FindingKind,
                    formIndex: Int?, ruleIndex: Int?, message: String) {
            self.segment = segment
            self.offset = offset
            self.address = address
            self.bytes = bytes
            self.kind = kind
            self.formIndex = formIndex
            self.ruleIndex = ruleIndex
            self.message = message
        }
    }

    /// The verdict on one file.
    public struct FileResult: Sendable, Equatable {
        public let path: String
        /// Over all executable segments.
        public let instructions: Int
        /// Bytes of executable code verified (not the file's size).
        public let bytes: Int
        /// The findings (refusals), in offset order per segment, segments in file order.
        public let sites: [Site]
        public let warnings: Int
        /// Why the file was skipped (unreadable, not ELF, no executable segment); nil when it was verified.
        public let error: String?

        public var accepted: Bool { error == nil && sites.isEmpty }

        public init(path: String, instructions: Int, bytes: Int, sites: [Site], warnings: Int, error: String?) {
            self.path = path
            self.instructions = instructions
            self.bytes = bytes
            self.sites = sites
            self.warnings = warnings
            self.error = error
        }

        static func skipped(_ path: String, _ reason: String) -> FileResult {
            FileResult(path: path, instructions: 0, bytes: 0, sites: [], warnings: 0, error: reason)
        }
    }

    /// The longest x86-64 instruction: a site never shows more bytes.
    static let maximumInstructionLength = 15

    /// ELF files under the paths (files are taken as given if they are ELF; directories are walked
    /// recursively, not following symlinks to directories; a file is ELF when it starts with 7F 45 4C 46),
    /// sorted, each once. `limit` caps how many are returned (nil: all).
    ///
    /// "Once" is per file, not per name: a symlink or hard link to a file already listed is left
    /// out, and the file keeps its first name in sorted order. Paths that do not exist, and files
    /// that cannot be opened, give nothing.
    public static func elfFiles(under paths: [String], limit: Int? = nil) -> [String] {
        var found: [(path: String, identity: FileIdentity)] = []
        for path in paths { collectELFFiles(path, named: true, into: &found) }
        found.sort { $0.path < $1.path }
        var seen = Set<FileIdentity>()
        var files: [String] = []
        for file in found where seen.insert(file.identity).inserted {
            if let limit, files.count >= limit { break }
            files.append(file.path)
        }
        return files
    }

    /// Verifies every file with `verifier`, on `workers` threads (default: the machine's active
    /// processor count), calling `progress(done, total)` as files complete (from any thread; may be nil).
    /// Results are in the order of `files`, identical whatever the number of workers.
    ///
    /// Workers take the next file one at a time (sizes differ by orders of magnitude), and each
    /// file's bytes live only while it is verified. The threads are real: more workers than
    /// processors help when reading the files is the slow part (a network share).
    public static func run(_ verifier: Verifier, files: [String], workers: Int? = nil,
                           progress: (@Sendable (Int, Int) -> Void)? = nil) -> [FileResult] {
        let queue = WorkQueue(count: files.count)
        onThreads(workerCount(workers, files: files.count)) {
            while let index = queue.take() {
                let done = queue.finish(index, scan(verifier, file: files[index]))
                progress?(done, files.count)
            }
        }
        return queue.results
    }

    /// Verifies one file's executable segments; a file that cannot be verified is skipped with the reason.
    public static func scan(_ verifier: Verifier, file path: String) -> FileResult {
        errno = 0
        guard let bytes = FileBytes.read(path) else {
            return .skipped(path, "cannot read: " + (errno != 0 ? String(cString: strerror(errno)) : "not a regular file"))
        }
        guard ELF.isELF(bytes) else { return .skipped(path, "not an ELF file") }
        let segments: [CodeSegment]
        do { segments = try ELF.executableSegments(bytes) } catch { return .skipped(path, error.message) }
        if segments.isEmpty { return .skipped(path, "no executable segment") }

        var instructions = 0, codeBytes = 0, warnings = 0
        var sites: [Site] = []
        for segment in segments {
            let report = segment.bytes.withUnsafeBytes { verifier.verify($0, base: segment.virtualAddress) }
            instructions += report.instructions
            codeBytes += report.bytes
            warnings += report.warnings.count
            // The model reports some rules (jump targets) after the sweep: order by offset, ties as reported.
            let ordered = report.findings.enumerated().sorted { ($0.element.offset, $0.offset) < ($1.element.offset, $1.offset) }
            sites.reserveCapacity(sites.count + ordered.count)
            for (_, finding) in ordered { sites.append(site(finding, in: segment)) }
        }
        return FileResult(path: path, instructions: instructions, bytes: codeBytes, sites: sites, warnings: warnings, error: nil)
    }

    /// Per-form counts of findings over results: form id (or "invalid") → count, sorted by count descending then id.
    ///
    /// A finding without a form is counted under its kind: "invalid" for bytes that do not
    /// decode, "layout" for code that starts off a bundle boundary.
    public static func formCounts(_ results: [FileResult]) -> [(form: String, count: Int)] {
        let forms = ISADatabase.shared.forms
        var counts: [String: Int] = [:]
        for result in results {
            for site in result.sites { counts[site.formIndex.map { forms[$0].id } ?? site.kind.rawValue, default: 0] += 1 }
        }
        return counts.map { (form: $0.key, count: $0.value) }.sorted { ($1.count, $0.form) < ($0.count, $1.form) }
    }

    private static func site(_ finding: Finding, in segment: CodeSegment) -> Site {
        let start = min(finding.offset, segment.bytes.count)
        let end = min(segment.bytes.count, start + min(max(finding.length, 0), maximumInstructionLength))
        return Site(segment: segment.name, offset: finding.offset, address: segment.virtualAddress &+ UInt64(finding.offset),
                    bytes: Array(segment.bytes[start..<end]), kind: finding.kind, formIndex: finding.formIndex,
                    ruleIndex: finding.ruleIndex, message: finding.message)
    }

    /// The number of workers `run` uses: as requested (default: one per active processor), at
    /// least one, and no more than there are files.
    public static func workerCount(_ requested: Int?, files: Int) -> Int {
        max(1, min(requested ?? sysconf(Int32(_SC_NPROCESSORS_ONLN)), files))
    }
}

// MARK: - Workers

/// Hands out the files' indexes one at a time and keeps each result in its file's slot.
private final class WorkQueue: Sendable {
    let count: Int
    private let next = Atomic<Int>(0)
    private let done = Atomic<Int>(0)
    private let slots: Mutex<[CorpusScan.FileResult?]>

    init(count: Int) {
        self.count = count
        slots = Mutex(Array(repeating: nil, count: count))
    }

    func take() -> Int? {
        let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
        return index < count ? index : nil
    }

    /// Stores a file's result; returns how many files are done.
    func finish(_ index: Int, _ result: CorpusScan.FileResult) -> Int {
        // One lock per file, against milliseconds of verification: no contention worth avoiding.
        slots.withLock { $0[index] = result }
        return done.wrappingAdd(1, ordering: .relaxed).newValue
    }

    /// Every slot, once every worker has finished.
    var results: [CorpusScan.FileResult] { slots.withLock { $0.map { $0! } } }
}

/// Runs `body` on `count` threads, the calling thread one of them, and returns when all have.
/// POSIX threads, not Dispatch: Dispatch's concurrentPerform runs at most one iteration per
/// processor at once, whatever the count asked for. A thread that cannot be created leaves
/// its share to the others.
private func onThreads(_ count: Int, _ body: @escaping @Sendable () -> Void) {
    final class Work {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    var threads: [pthread_t] = []
    for _ in 1..<max(count, 1) {
        var thread = pthread_t()
        let work = Unmanaged.passRetained(Work(body)).toOpaque()
        let created = pthread_create(&thread, nil, { work in
            Unmanaged<Work>.fromOpaque(work!).takeRetainedValue().body()
            return nil
        }, work)
        if created == 0 { threads.append(thread) } else { Unmanaged<Work>.fromOpaque(work).release() }
    }
    body()
    for thread in threads { pthread_join(thread, nil) }
}

// MARK: - Finding ELF files

/// A file, whatever its names: device and inode.
private struct FileIdentity: Hashable {
    let device: UInt64
    let inode: UInt64

    init(_ status: stat) {
        device = UInt64(status.st_dev)
        inode = UInt64(status.st_ino)
    }
}

/// Adds the ELF files at `path` to `found`. A path the caller named is followed even when it is a
/// symlink to a directory; inside a walk, symlinks to directories are not (they can loop, and
/// usually point into a tree that is scanned anyway).
private func collectELFFiles(_ path: String, named: Bool, into found: inout [(path: String, identity: FileIdentity)]) {
    var status = stat()
    guard (named ? stat(path, &status) : lstat(path, &status)) == 0 else { return }
    if status.st_mode & S_IFMT == S_IFLNK {
        guard stat(path, &status) == 0, status.st_mode & S_IFMT != S_IFDIR else { return }
    }
    switch status.st_mode & S_IFMT {
    case S_IFDIR:
        guard let directory = opendir(path) else { return }
        defer { closedir(directory) }
        let prefix = path.hasSuffix("/") ? path : path + "/"
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name == "." || name == ".." { continue }
            collectELFFiles(prefix + name, named: false, into: &found)
        }
    case S_IFREG:
        if startsWithELFMagic(path) { found.append((path, FileIdentity(status))) }
    default:
        return  // devices, FIFOs and sockets hold no code (and opening a FIFO blocks)
    }
}

private func startsWithELFMagic(_ path: String) -> Bool {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return false }
    defer { close(descriptor) }
    var magic: [UInt8] = [0, 0, 0, 0]
    let count = magic.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, 4) }
    return count == 4 && ELF.isELF(magic)
}
