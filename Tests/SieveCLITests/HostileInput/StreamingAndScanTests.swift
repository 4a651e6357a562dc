import Foundation
import Testing

extension HostileInputTests {
    /// Fail closed, bounded memory (DESIGN §12): a damaged or unreadable input is an error, never
    /// silently skipped, and findings are streamed and capped, so memory does not grow with them.
    /// The damaged files are real NaCl executables with one program-header field rewritten.
    @Suite struct FailClosed {
        static let nacl = Sieve.packageRoot.appendingPathComponent("policies/nacl.yaml").path
        static let hello = Sieve.corpus.appendingPathComponent("nacl/x64_hello_world.nexe").path

        // MARK: Damaged ELF files

        /// Each damage, and the words its error names.
        static let damages: [(name: String, expected: String, damage: @Sendable (inout ELFImage) -> Void)] = [
            ("truncated", "past the end of the file", { image in
                // In the middle of the code.
                image.bytes = Array(image.bytes.prefix(Int(image.field(.offset, of: image.code) + image.field(.fileSize, of: image.code) / 2)))
            }),
            ("e_phoff", "program header table", { $0.store(UInt64($0.bytes.count - 10), at: 32) }),
            ("e_phnum", "65534 entries", { $0.store(UInt16(0xFFFE), at: 56) }),
            ("p_offset", "p_offset", { $0.setField(.offset, of: $0.code, to: UInt64($0.bytes.count - 16)) }),
            ("p_filesz", "p_filesz", { image in
                image.setField(.fileSize, of: image.code, to: 0x4000_0000)
                image.setField(.memorySize, of: image.code, to: 0x4000_0000)
            }),
            ("wrapping p_vaddr + p_memsz", "wraps past 2^64", { $0.setField(.address, of: $0.code, to: UInt64.max - 0xFFF) }),
            ("overlapping in memory", "overlap in memory", { image in
                // A second executable segment, from other file bytes, over the code's addresses.
                let other = image.otherLoad
                image.copyHeader(image.code, to: other)
                image.setField(.offset, of: other, to: 0)
                image.setField(.fileSize, of: other, to: 0x100)
                image.setField(.memorySize, of: other, to: 0x100)
                image.setField(.address, of: other, to: image.field(.address, of: image.code) + 0x40)
            }),
            ("overlapping in the file", "share file bytes", { image in
                // The code's own bytes again, at addresses far from the code's.
                let other = image.otherLoad
                image.copyHeader(image.code, to: other)
                image.setField(.address, of: other, to: image.field(.address, of: image.code) + 0x1000_0000)
            }),
        ]

        /// Every damage in one directory, beside the whole executable: "good.nexe" sorts after
        /// them all, and the other FILEs are still verified after an error. (One run per command,
        /// not per damage: a debug `sieve` takes a second and a half to compile its policy.)
        static func damagedDirectory() throws -> (dir: String, damaged: [String]) {
            let dir = try directory()
            var damaged: [String] = []
            for (index, (_, _, damage)) in damages.enumerated() {
                let path = dir + "/damaged-\(index).nexe"
                try Data(damagedImage(damage).bytes).write(to: URL(fileURLWithPath: path))
                damaged.append(path)
            }
            // Rewritten by the same helpers, undamaged: what the damages start from is whole.
            try Data(damagedImage { _ in }.bytes).write(to: URL(fileURLWithPath: dir + "/good.nexe"))
            return (dir, damaged)
        }

        @Test func verifyRefusesADamagedELFAsAnInputError() throws {
            let (dir, damaged) = try Self.damagedDirectory()
            let result = try Sieve.run(["verify", "-p", Self.nacl] + damaged + [dir + "/good.nexe"])
            #expect(result.status == 2, "\(result.stdout)")
            #expect(result.lines == ["\(dir)/good.nexe: 6766 instructions, 30208 bytes: accepted"])
            let errors = result.stderr.split(separator: "\n")
            for (index, (name, expected, _)) in Self.damages.enumerated() {
                let error = errors.first { $0.hasPrefix("sieve: error: \(damaged[index]): ") }
                #expect(error?.contains(expected) == true, "\(name): \(error ?? "no error")")
            }
            // In JSON too, each with its "error", and the document complete.
            let json = try Sieve.run(["verify", "-p", Self.nacl, "--format", "json"] + damaged + [dir + "/good.nexe"])
            #expect(json.status == 2)
            let files = try #require((try json.json() as? [String: Any])?["files"] as? [[String: Any]])
            #expect(files.map { $0["accepted"] as? Bool } == Array(repeating: false, count: damaged.count) + [true])
            for (index, (name, expected, _)) in Self.damages.enumerated() {
                #expect((files[index]["error"] as? String)?.contains(expected) == true, "\(name)")
            }
            #expect(files.last?["error"] is NSNull)
        }

        @Test func scanListsADamagedELFAsAnError() throws {
            let (dir, damaged) = try Self.damagedDirectory()
            let result = try Sieve.run("scan", "-p", Self.nacl, dir)
            #expect(result.status == 2, "\(result.stdout)")
            for (index, (name, expected, _)) in Self.damages.enumerated() {
                let line = result.lines.first { $0.hasPrefix(damaged[index] + ": ") }
                #expect(line?.hasPrefix(damaged[index] + ": error: ") == true && line?.contains(expected) == true, "\(name): \(line ?? "")")
            }
            #expect(result.stdout.contains("9 files: 1 accepted, 0 refused, 0 skipped, 8 errors;"))
            #expect(result.stderr.contains("8 inputs could not be verified"))

            // --skip-damaged: listed as skipped, and the exit status is the verified file's.
            let skipping = try Sieve.run("scan", "-p", Self.nacl, dir, "--skip-damaged", "--format", "json")
            #expect(skipping.status == 0, "\(skipping.stdout)")
            let json = try #require(try skipping.json() as? [String: Any])
            let files = try #require(json["files"] as? [[String: Any]])
            #expect(files.map { $0["status"] as? String } == Array(repeating: "skipped", count: damaged.count) + ["accepted"])
            for (index, (name, expected, _)) in Self.damages.enumerated() {
                #expect((files[index]["error"] as? String)?.contains(expected) == true, "\(name)")
            }
            #expect((json["totals"] as? [String: Any])?["skipped"] as? Int == damaged.count)

            // Named directly, likewise; and with nothing left to verify, --skip-damaged is no pass.
            #expect(try Sieve.run(["scan", "-p", Self.nacl, dir + "/good.nexe"] + damaged).status == 2)
            let nothing = try Sieve.run(["scan", "-p", Self.nacl, "--skip-damaged"] + damaged)
            #expect(nothing.status == 2 && nothing.stderr.contains("no file could be verified"))
        }

        // MARK: What a scan is given

        @Test func namedPathsThatAreNotUsableELFFilesAreErrors() throws {
            let dir = try Self.directory()
            try "not code\n".write(toFile: dir + "/notes.txt", atomically: true, encoding: .utf8)
            #expect(mkfifo(dir + "/fifo", 0o600) == 0)
            try Data([0x7F, 0x45, 0x4C, 0x46, 1, 1, 1, 0]).write(to: URL(fileURLWithPath: dir + "/elf32"))

            // Found in a directory, they are not inputs (notes, FIFO) or not code (ELF32): exit 0.
            let walked = try Sieve.run("scan", "-p", Self.nacl, dir, Self.hello)
            #expect(walked.status == 0, "\(walked.stdout)")
            #expect(walked.lines.contains("\(dir)/elf32: skipped: ELF32 files are not supported (EI_CLASS at file offset 0x4 is 1)"))
            #expect(!walked.stdout.contains("notes.txt") && !walked.stdout.contains("fifo"))

            // Named, each is a mistake the scan reports.
            let named = ["notes.txt", "fifo", "elf32"].map { dir + "/" + $0 }
            let result = try Sieve.run(["scan", "-p", Self.nacl, Self.hello] + named)
            #expect(result.status == 2, "\(result.stdout)")
            for (path, reason) in zip(named, ["not an ELF file", "not a regular file or directory", "ELF32 files are not supported"]) {
                #expect(result.lines.contains { $0.hasPrefix("\(path): error: \(reason)") }, "\(path): \(result.stdout)")
            }
            #expect(try Sieve.run(["scan", "-p", Self.nacl, Self.hello, "--skip-damaged"] + named).status == 0)
        }

        @Test func aDirectoryTooDeepToOpenIsAnError() throws {
            // Names beyond PATH_MAX cannot be opened by path, even by root: a place to hide code
            // from a scanner that walks by path.
            let dir = try Self.directory()
            try FileManager.default.copyItem(atPath: Self.hello, toPath: dir + "/good.nexe")
            var descriptor = open(dir, O_RDONLY | O_DIRECTORY)
            let component = String(repeating: "d", count: 250)
            for _ in 0..<18 {
                #expect(mkdirat(descriptor, component, 0o755) == 0)
                let next = openat(descriptor, component, O_RDONLY | O_DIRECTORY)
                close(descriptor)
                descriptor = next
            }
            close(descriptor)

            let result = try Sieve.run("scan", "-p", Self.nacl, dir)
            #expect(result.status == 2, "\(result.stdout)")
            #expect(result.lines.contains { $0.contains(": error: cannot ") && $0.hasSuffix("File name too long") }, "\(result.stdout)")
            Self.remove(dir)
        }

        /// Whether an unreadable file can be made here: chmod 000 stops anyone but root, and as
        /// root the scan runs as nobody (setpriv) when that is possible.
        static let unreadableIsPossible: Bool = getuid() != 0 || FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")

        @Test(.enabled(if: unreadableIsPossible, "running as root without setpriv: chmod 000 cannot stop a read"))
        func unreadableFilesAndDirectoriesAreErrors() throws {
            let dir = try Self.directory()
            try FileManager.default.copyItem(atPath: Self.hello, toPath: dir + "/good.nexe")
            try FileManager.default.copyItem(atPath: Self.hello, toPath: dir + "/locked.nexe")
            try FileManager.default.createDirectory(atPath: dir + "/locked", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: Self.hello, toPath: dir + "/locked/hidden.nexe")
            #expect(chmod(dir + "/locked.nexe", 0) == 0 && chmod(dir + "/locked", 0) == 0)
            defer { chmod(dir + "/locked", 0o755) }

            func scan(_ extra: String...) throws -> Sieve.Result {
                let arguments = ["scan", "-p", Self.nacl, dir] + extra
                // As root, a chmod stops nobody: run the scan as nobody, who can read the rest.
                if getuid() == 0 {
                    return try Self.run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", Sieve.binary.path] + arguments)
                }
                return try Self.run(Sieve.binary.path, arguments)
            }
            let result = try scan()
            #expect(result.status == 2, "\(result.stdout) \(result.stderr)")
            #expect(result.lines.contains("\(dir)/locked: error: cannot open directory: Permission denied"), "\(result.stdout)")
            #expect(result.lines.contains("\(dir)/locked.nexe: error: cannot read: Permission denied"), "\(result.stdout)")
            #expect(result.stdout.contains("3 files: 1 accepted, 0 refused, 0 skipped, 2 errors;"))
            let skipping = try scan("--skip-damaged")
            #expect(skipping.status == 0, "\(skipping.stdout)")
            #expect(skipping.lines.contains("\(dir)/locked: skipped: cannot open directory: Permission denied"))
        }

        // MARK: Options

        @Test func baseWithoutRawIsAUsageError() throws {
            let result = try Sieve.run("verify", "-p", Self.nacl, Self.hello, "--base", "0x1000")
            #expect(result.status == 2)
            #expect(result.stderr.contains("--base applies to raw code"))
        }

        // MARK: Findings capped and streamed

        @Test func maxFindingsListsThatManyAndCountsTheRest() throws {
            let path = try Sieve.temporaryFile(Self.randomBytes(64 << 10, seed: 11))
            let text = try Sieve.run("verify", "-p", Self.nacl, "--raw", path, "--max-findings", "5")
            #expect(text.status == 1)
            #expect(text.lines.filter { $0.hasPrefix(path + ":0x") && $0.contains(": error: [") }.count == 5)
            let summary = try #require(text.lines.last { $0.hasPrefix(path + ": ") })
            #expect(summary.contains(" bytes: refused (") && summary.contains(" findings, the first 5 listed)"), "\(summary)")

            let json = try Sieve.run("verify", "-p", Self.nacl, "--raw", path, "--max-findings", "5", "--format", "json")
            #expect(json.status == 1)
            let document = try #require(try json.json() as? [String: Any])
            #expect(document["max_findings"] as? Int == 5)
            let file = try #require((document["files"] as? [[String: Any]])?.first)
            #expect((file["findings"] as? [[String: Any]])?.count == 5)
            #expect(file["findings_truncated"] as? Bool == true && file["accepted"] as? Bool == false)
            let total = try #require(file["findings_total"] as? Int)
            #expect(total > 5 && summary.contains("(\(total) findings,"))
            #expect(((file["warnings"] as? [Any])?.count ?? 99) <= 5)

            // 0 lists none and still refuses.
            let none = try Sieve.run("verify", "-p", Self.nacl, "--raw", path, "--max-findings", "0")
            #expect(none.status == 1 && none.lines.count == 1 && none.stdout.contains("(\(total) findings, none listed)"))
            #expect(try Sieve.run("verify", "-p", Self.nacl, "--raw", path, "--max-findings", "-1").status == 2)
        }

        @Test func scanSitesAreCappedButCounted() throws {
            let dir = try Self.directory()
            // Random bytes in place of the code: thousands of findings in one executable.
            var image = try Self.damagedImage { _ in }
            let offset = Int(image.field(.offset, of: image.code)), size = Int(image.field(.fileSize, of: image.code))
            image.bytes.replaceSubrange(offset..<offset + size, with: Self.randomBytes(size, seed: 5))
            try Data(image.bytes).write(to: URL(fileURLWithPath: dir + "/noise.nexe"))
            let result = try Sieve.run("scan", "-p", Self.nacl, dir, "--sites", "--max-findings", "7", "--format", "json")
            #expect(result.status == 1)
            let json = try #require(try result.json() as? [String: Any])
            let file = try #require((json["files"] as? [[String: Any]])?.first)
            let findings = try #require(file["findings"] as? Int)
            #expect((file["sites"] as? [Any])?.count == 7 && file["findings_truncated"] as? Bool == true && findings > 1000)
            // Every finding counts by form, listed or not.
            #expect((json["forms"] as? [[String: Any]])?.reduce(0) { $0 + ($1["count"] as? Int ?? 0) } == findings)
        }

        static let timeCommand = "/usr/bin/time"

        @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: timeCommand), "needs /usr/bin/time (apt-get install time)"))
        func verifyRunsInMemoryThatDoesNotGrowWithTheFindings() throws {
            // 16 MiB of random bytes: ~2.8 million findings. Kept and rendered (the old verify),
            // they took over 400 MB in text and more in JSON; streamed, what remains is the input,
            // the core's marks (a byte per byte of code, and its list of direct jumps) and the runtime.
            // (Not `ulimit -v`: the core reserves address space for the worst case of jumps, and
            // refuses the code as "not enough memory" when it cannot: a pass for the wrong reason.)
            let path = try Sieve.temporaryFile(Self.randomBytes(16 << 20, seed: 32))
            let dir = try Self.directory()
            defer { unlink(path); Self.remove(dir) }
            let result = try Self.run("/bin/sh", ["-c", "exec \(Self.timeCommand) -f %M -o \(dir)/rss \"$@\" > \(dir)/out.json", "sh",
                                                   Sieve.binary.path, "verify", "-p", Self.nacl, "--raw", path, "--format", "json"])
            #expect(result.status == 1, "\(result.stderr)")
            let document = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/out.json"))) as? [String: Any]
            let file = try #require((document?["files"] as? [[String: Any]])?.first)
            #expect((file["findings_total"] as? Int ?? 0) > 1_000_000 && (file["findings"] as? [Any])?.count == 1000)
            // (time adds "Command exited with non-zero status 1" before the figure.)
            let kib = try #require(Int(String(contentsOfFile: dir + "/rss", encoding: .utf8).split(separator: "\n").last ?? ""))
            #expect(kib < 250 << 10, "peak RSS \(kib >> 10) MiB for 16 MiB of code")
        }

        // MARK: Helpers

        static func run(_ executable: String, _ arguments: [String]) throws -> Sieve.Result {
            try Sieve.run(arguments, executable: executable)
        }

        static func directory() throws -> String {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-failclosed-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            return dir
        }

        static func remove(_ path: String) { _ = try? run("/bin/rm", ["-rf", path]) }

        static func damagedImage(_ damage: (inout ELFImage) -> Void) throws -> ELFImage {
            var image = try ELFImage(Array(Data(contentsOf: URL(fileURLWithPath: hello))))
            damage(&image)
            return image
        }

        static func damaged(_ damage: (inout ELFImage) -> Void) throws -> String {
            try Sieve.temporaryFile(damagedImage(damage).bytes)
        }

        /// SplitMix64: the same bytes on every run (a word at a time: debug builds are slow).
        static func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
            var state = seed
            var words = [UInt64](repeating: 0, count: (count + 7) / 8)
            words.withUnsafeMutableBufferPointer { buffer in
                for index in buffer.indices {
                    state &+= 0x9E37_79B9_7F4A_7C15
                    var z = state
                    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                    buffer[index] = (z ^ (z >> 31)).littleEndian
                }
            }
            return words.withUnsafeBytes { Array($0.prefix(count)) }
        }
    }
}

/// An ELF64 file's bytes, with its program headers addressable field by field.
struct ELFImage {
    enum Field: Int {
        case type = 0, flags = 4, offset = 8, address = 16, fileSize = 32, memorySize = 40
        var width: Int { self == .type || self == .flags ? 4 : 8 }
    }

    var bytes: [UInt8]
    /// The first executable LOAD, and another LOAD (not executable) to turn into a second one.
    private(set) var code = 0
    private(set) var otherLoad = 0

    init(_ bytes: [UInt8]) throws {
        self.bytes = bytes
        var code: Int?, other: Int?
        for index in 0..<Int(load(56, 2)) where load(header(index), 4) == 1 {  // PT_LOAD
            if code == nil && load(header(index) + 4, 4) & 1 != 0 { code = index } else if other == nil { other = index }
        }
        self.code = try #require(code)
        self.otherLoad = try #require(other)
    }

    func header(_ index: Int) -> Int { Int(load(32, 8)) + index * Int(load(54, 2)) }

    func load(_ offset: Int, _ width: Int) -> UInt64 {
        (0..<width).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * $1) }
    }

    func field(_ field: Field, of index: Int) -> UInt64 { load(header(index) + field.rawValue, field.width) }

    mutating func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for index in 0..<MemoryLayout<T>.size { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }

    mutating func setField(_ field: Field, of index: Int, to value: UInt64) {
        if field.width == 4 { store(UInt32(value), at: header(index) + field.rawValue) } else { store(value, at: header(index) + field.rawValue) }
    }

    mutating func copyHeader(_ from: Int, to: Int) {
        let source = header(from), target = header(to)
        bytes.replaceSubrange(target..<target + 56, with: bytes[source..<source + 56])
    }
}
