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
        /// Whether the file was verified, and if not, whether that is an error.
        public enum Status: Sendable, Equatable {
            case verified
            /// Not code Sieve verifies, found while walking a directory: no ELF magic, ELF32,
            /// big-endian, another machine, no executable segment (object files).
            case skipped(String)
            /// Could not be judged: unreadable, a damaged ELF file (truncated, fields out of the
            /// file, wrapping or overlapping segments), a directory that cannot be listed, or a
            /// path named directly that is not a usable ELF file. An input error (DESIGN §11).
            case failed(String)
        }

        public let path: String
        public let status: Status
        /// Over all executable segments.
        public let instructions: Int
        /// Bytes of executable code verified (not the file's size).
        public let bytes: Int
        /// The findings listed (at most the scan's cap), in offset order per segment, segments in file order.
        public let sites: [Site]
        /// Every refusal in the file, listed or not.
        public let findings: Int
        public let warnings: Int
        /// Every refusal by form id, or by kind ("invalid", "layout", ...) when it has no form.
        public let findingsByForm: [String: Int]

        /// Why the file was not verified (skipped or failed); nil when it was verified.
        public var error: String? {
            switch status {
            case .verified: nil
            case .skipped(let reason), .failed(let reason): reason
            }
        }

        public var accepted: Bool { status == .verified && findings == 0 }
        /// More findings than `sites` lists.
        public var sitesTruncated: Bool { findings > sites.count }

        public init(path: String, status: Status, instructions: Int, bytes: Int, sites: [Site], findings: Int,
                    warnings: Int, findingsByForm: [String: Int]) {
            self.path = path
            self.status = status
            self.instructions = instructions
            self.bytes = bytes
            self.sites = sites
            self.findings = findings
            self.warnings = warnings
            self.findingsByForm = findingsByForm
        }

        /// Every finding listed: `error` nil is verified, otherwise skipped with that reason.
        public init(path: String, instructions: Int, bytes: Int, sites: [Site], warnings: Int, error: String?) {
            let forms = ISADatabase.shared.forms
            self.init(path: path, status: error.map(Status.skipped) ?? .verified, instructions: instructions, bytes: bytes,
                      sites: sites, findings: sites.count, warnings: warnings,
                      findingsByForm: sites.reduce(into: [:]) { $0[$1.formIndex.map { forms[$0].id } ?? $1.kind.rawValue, default: 0] += 1 })
        }

        static func notVerified(_ path: String, _ status: Status) -> FileResult {
            FileResult(path: path, status: status, instructions: 0, bytes: 0, sites: [], findings: 0, warnings: 0, findingsByForm: [:])
        }
    }

    /// The longest x86-64 instruction: a site never shows more bytes.
    static let maximumInstructionLength = 15

    /// Sites listed per file unless asked otherwise: enough to act on, and a bound on memory
    /// (random bytes give a finding every few bytes).
    public static let defaultMaxFindings = 1000

    /// ELF files under the paths (files are taken as given if they are ELF; directories are walked
    /// recursively, not following symlinks to directories; a file is ELF when it starts with 7F 45 4C 46),
    /// sorted, each once. `limit` caps how many are returned (nil: all).
    ///
    /// "Once" is per file, not per name: a symlink or hard link to a file already listed is left
    /// out, and the file keeps its first name in sorted order. Paths that do not exist, and files
    /// that cannot be opened, give nothing: `inputs(under:limit:)` lists them.
    public static func elfFiles(under paths: [String], limit: Int? = nil) -> [String] {
        Walk(paths).files(limit: limit) { $0.isELF }
    }

    /// What a scan is given: the files to verify, and what could not be examined.
    public struct Inputs: Sendable, Equatable {
        /// The ELF files under the directories, and every regular file named directly whatever
        /// it holds; sorted, each file once (as `elfFiles(under:limit:)`).
        public var files: [String]
        /// Those of `files` named directly: for them, not being a usable ELF file is an error.
        public var named: Set<String>
        /// What could not be examined, sorted by path, each `.failed` with the reason: a path that
        /// does not exist or is not a regular file or directory, a directory that cannot be opened
        /// or listed, an entry whose name is too long to open, a file whose first bytes cannot be
        /// read. Dangling symlinks (and loops) point at nothing and are left out, as are devices,
        /// FIFOs and sockets found in a directory.
        public var unreadable: [FileResult]
    }

    /// The inputs of a scan of `paths`; `limit` caps the number of files (nil: all), not `unreadable`.
    public static func inputs(under paths: [String], limit: Int? = nil) -> Inputs {
        let walk = Walk(paths)
        let files = walk.files(limit: limit) { $0.isELF || $0.named }
        let named = Set(walk.found.filter(\.named).map(\.path))
        return Inputs(files: files, named: named.intersection(files),
                      unreadable: walk.problems.sorted { $0.path < $1.path }.map { .notVerified($0.path, .failed($0.reason)) })
    }

    /// Verifies every file with `verifier`, on `workers` threads (default: the machine's active
    /// processor count), calling `progress(done, total)` as files complete (from any thread; may be nil).
    /// Results are in the order of `files`, identical whatever the number of workers; each lists
    /// at most `maxFindings` sites (every finding is counted).
    ///
    /// Workers take the next file one at a time (sizes differ by orders of magnitude), and each
    /// file's bytes live only while it is verified. The threads are real: more workers than
    /// processors help when reading the files is the slow part (a network share).
    public static func run(_ verifier: Verifier, files: [String], named: Set<String> = [],
                           maxFindings: Int = defaultMaxFindings, workers: Int? = nil,
                           progress: (@Sendable (Int, Int) -> Void)? = nil) -> [FileResult] {
        let results = Mutex<[FileResult]>([])
        stream(verifier, files: files, named: named, maxFindings: maxFindings, workers: workers, progress: progress) { result in
            results.withLock { $0.append(result) }
        }
        return results.withLock { $0 }
    }

    /// As `run`, but hands each result to `deliver` as soon as it and every file before it are
    /// done, in the order of `files`, one call at a time (from the worker that completed the
    /// prefix), and keeps none: memory does not grow with the number of files.
    public static func stream(_ verifier: Verifier, files: [String], named: Set<String> = [],
                              maxFindings: Int = defaultMaxFindings, workers: Int? = nil,
                              progress: (@Sendable (Int, Int) -> Void)? = nil,
                              deliver: @escaping @Sendable (FileResult) -> Void) {
        let queue = WorkQueue(count: files.count, deliver: deliver)
        onThreads(workerCount(workers, files: files.count)) {
            while let index = queue.take() {
                let file = files[index]
                let done = queue.finish(index, scan(verifier, file: file, named: named.contains(file), maxFindings: maxFindings))
                progress?(done, files.count)
            }
        }
    }

    /// Verifies one file's executable segments, listing at most `maxFindings` sites.
    ///
    /// A file that cannot be read, or is a damaged ELF file, is `.failed`. One that holds no code
    /// Sieve verifies (no ELF magic, ELF32, another machine, no executable segment) is
    /// `.skipped`, unless `named` (the user named it directly): then it is `.failed` too.
    public static func scan(_ verifier: Verifier, file path: String, named: Bool = false,
                            maxFindings: Int = defaultMaxFindings) -> FileResult {
        func notCode(_ reason: String) -> FileResult { .notVerified(path, named ? .failed(reason) : .skipped(reason)) }
        errno = 0
        guard let bytes = FileBytes.read(path) else {
            return .notVerified(path, .failed("cannot read: " + (errno != 0 ? String(cString: strerror(errno)) : "not a regular file")))
        }
        guard ELF.isELF(bytes) else { return notCode("not an ELF file") }
        let segments: [CodeSegment]
        do { segments = try ELF.executableSegments(bytes) } catch {
            return error.kind == .damaged ? .notVerified(path, .failed(error.message)) : notCode(error.message)
        }
        if segments.isEmpty { return notCode("no executable segment") }

        var instructions = 0, codeBytes = 0, findings = 0, warnings = 0
        var sites: [Site] = []
        var byForm: [Int: Int] = [:], byKind: [FindingKind: Int] = [:]
        for segment in segments {
            var listed: [(order: Int, finding: Finding)] = []
            let counts = segment.bytes.withUnsafeBytes { code in
                verifier.verify(code, base: segment.virtualAddress, maxFindings: maxFindings - sites.count,
                                tally: { kind, form in
                                    if let form { byForm[form, default: 0] += 1 } else { byKind[kind, default: 0] += 1 }
                                }) { finding, isWarning in
                    if !isWarning { listed.append((listed.count, finding)) }
                }
            }
            instructions += counts.instructions
            codeBytes += counts.bytes
            findings += counts.findings
            warnings += counts.warnings
            // The model reports some rules (jump targets) after the sweep: order by offset, ties as reported.
            listed.sort { ($0.finding.offset, $0.order) < ($1.finding.offset, $1.order) }
            for (_, finding) in listed { sites.append(site(finding, in: segment)) }
        }
        let forms = ISADatabase.shared.forms
        var findingsByForm: [String: Int] = [:]
        for (form, count) in byForm { findingsByForm[forms[form].id, default: 0] += count }
        for (kind, count) in byKind { findingsByForm[kind.rawValue, default: 0] += count }
        return FileResult(path: path, status: .verified, instructions: instructions, bytes: codeBytes, sites: sites,
                          findings: findings, warnings: warnings, findingsByForm: findingsByForm)
    }

    /// Per-form counts of findings over results: form id (or "invalid") → count, sorted by count descending then id.
    ///
    /// A finding without a form is counted under its kind: "invalid" for bytes that do not
    /// decode, "layout" for code that starts off a bundle boundary. Every finding counts, listed or not.
    public static func formCounts(_ results: [FileResult]) -> [(form: String, count: Int)] {
        var counts: [String: Int] = [:]
        for result in results { counts.merge(result.findingsByForm, uniquingKeysWith: +) }
        return sortedCounts(counts)
    }

    /// form → count, sorted by count descending then form.
    public static func sortedCounts(_ counts: [String: Int]) -> [(form: String, count: Int)] {
        counts.map { (form: $0.key, count: $0.value) }.sorted { ($1.count, $0.form) < ($0.count, $1.form) }
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
        max(1, min(requested ?? processors, files))
    }

    /// The active processors (at least one): the default number of threads wherever Sieve uses several.
    public static var processors: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
}

// MARK: - Workers

/// Hands out the files' indexes one at a time, and passes results on in the files' order: a
/// result waits in its slot only until every file before it is done.
private final class WorkQueue: Sendable {
    let count: Int
    private let next = Atomic<Int>(0)
    private let done = Atomic<Int>(0)
    private let deliver: @Sendable (CorpusScan.FileResult) -> Void
    /// Results done but not yet passed on, and the index of the next to pass on.
    private let waiting: Mutex<(slots: [Int: CorpusScan.FileResult], next: Int)>

    init(count: Int, deliver: @escaping @Sendable (CorpusScan.FileResult) -> Void) {
        self.count = count
        self.deliver = deliver
        waiting = Mutex(([:], 0))
    }

    func take() -> Int? {
        let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
        return index < count ? index : nil
    }

    /// Stores a file's result and passes on every result now in order; returns how many files are done.
    func finish(_ index: Int, _ result: CorpusScan.FileResult) -> Int {
        // One lock per file, against milliseconds of verification: no contention worth avoiding.
        // Delivering under the lock keeps the calls one at a time and in order.
        waiting.withLock { waiting in
            waiting.slots[index] = result
            while let ready = waiting.slots.removeValue(forKey: waiting.next) {
                deliver(ready)
                waiting.next += 1
            }
        }
        return done.wrappingAdd(1, ordering: .relaxed).newValue
    }
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

/// The files under some paths, and what could not be examined on the way.
private struct Walk {
    struct Entry {
        let path: String
        let identity: FileIdentity
        /// Named by the caller, not found in a directory.
        let named: Bool
        let isELF: Bool
    }

    private(set) var found: [Entry] = []
    private(set) var problems: [(path: String, reason: String)] = []

    init(_ paths: [String]) {
        for path in paths { collect(path, named: true) }
        found.sort { $0.path < $1.path }
    }

    /// The paths of the entries `include` keeps, sorted, each file once, at most `limit`.
    func files(limit: Int?, _ include: (Entry) -> Bool) -> [String] {
        var seen = Set<FileIdentity>()
        var files: [String] = []
        for entry in found where include(entry) && seen.insert(entry.identity).inserted {
            if let limit, files.count >= limit { break }
            files.append(entry.path)
        }
        return files
    }

    /// Adds what is at `path`. A path the caller named is followed even when it is a symlink to a
    /// directory; inside a walk, symlinks to directories are not (they can loop, and usually point
    /// into a tree that is scanned anyway).
    private mutating func collect(_ path: String, named: Bool) {
        var status = stat()
        guard (named ? stat(path, &status) : lstat(path, &status)) == 0 else {
            return problems.append((path, "cannot examine: \(errorText())"))
        }
        if status.st_mode & S_IFMT == S_IFLNK {
            guard stat(path, &status) == 0 else {
                // A dangling symlink, or a loop, points at nothing a loader could run.
                if ![ENOENT, ENOTDIR, ELOOP].contains(errno) { problems.append((path, "cannot examine: \(errorText())")) }
                return
            }
            if status.st_mode & S_IFMT == S_IFDIR { return }
        }
        switch status.st_mode & S_IFMT {
        case S_IFDIR:
            guard let directory = opendir(path) else { return problems.append((path, "cannot open directory: \(errorText())")) }
            defer { closedir(directory) }
            let prefix = path.hasSuffix("/") ? path : path + "/"
            while true {
                errno = 0
                guard let entry = readdir(directory) else {
                    if errno != 0 { problems.append((path, "cannot list directory: \(errorText())")) }
                    break
                }
                let name = withUnsafePointer(to: &entry.pointee.d_name) {
                    String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
                }
                if name == "." || name == ".." { continue }
                collect(prefix + name, named: false)
            }
        case S_IFREG:
            switch startsWithELFMagic(path) {
            case .success(let isELF):
                if isELF || named { found.append(Entry(path: path, identity: FileIdentity(status), named: named, isELF: isELF)) }
            case .failure(let reason):
                problems.append((path, "cannot read: \(reason)"))
            }
        default:
            // Devices, FIFOs and sockets hold no code (and opening a FIFO blocks): found in a
            // directory they are not inputs, named they are a mistake.
            if named { problems.append((path, "not a regular file or directory")) }
        }
    }
}

private struct ReadFailure: Error { let reason: String }

extension ReadFailure: CustomStringConvertible { var description: String { reason } }

/// Whether the file starts with the ELF magic; a failure to open or read it is not a "no".
private func startsWithELFMagic(_ path: String) -> Result<Bool, ReadFailure> {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard descriptor >= 0 else { return .failure(ReadFailure(reason: errorText())) }
    defer { close(descriptor) }
    var magic: [UInt8] = [0, 0, 0, 0]
    var count = 0
    while count < 4 {
        let n = magic.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + count, 4 - count) }
        if n < 0 && errno == EINTR { continue }
        if n < 0 { return .failure(ReadFailure(reason: errorText())) }
        if n == 0 { break }
        count += n
    }
    return .success(count == 4 && ELF.isELF(magic))
}

private func errorText() -> String { String(cString: strerror(errno)) }
