import Foundation
import Policy
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension HostileInputTests {
    /// Every file Sieve writes is written whole or not at all and never loses a concurrent edit;
    /// scratch files come from mkstemp/mkdtemp; a failed write, to a file or to standard output,
    /// is exit status 2 (DESIGN §12). Each case checks the exit status and what is on disk.
    /// `SIEVE_BINARY=/work/sieve-before swift test --filter FileSafety` shows them fail on the old build.
    @Suite struct FileSafety {
        /// A small policy: no `extends`, no sandbox model, so a ban runs quickly.
        static let tiny = "# a small policy\nsieve: 1\nname: tiny\nsandbox:\n  model: none\nallow:\n  - mnemonic: [nop, ret]\n"
        static let nacl = Sieve.corpus.appendingPathComponent("nacl/x64_hello_world.nexe").path

        /// A fresh directory for one case, with `tiny` as p.yaml in it.
        static func directory(policy: String? = tiny) throws -> String {
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-files-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            if let policy { try Data(policy.utf8).write(to: url.appendingPathComponent("p.yaml")) }
            return url.path
        }

        static func remove(_ directory: String) { try? FileManager.default.removeItem(atPath: directory) }

        static func contents(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

        static func entries(_ directory: String) throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        }

        /// The bans of a policy as its loader sees them: the file must load.
        static func bans(_ path: String) throws -> [Rule] {
            try PolicyLoader.load(path).rules.filter { $0.effect == .ban && $0.file == path }
        }

        static let isRoot = geteuid() == 0
        static let hasCC = FileManager.default.isExecutableFile(atPath: "/usr/bin/cc")
        static let hasPatch = FileManager.default.isExecutableFile(atPath: "/usr/bin/patch")

        /// Whether a tmpfs can be mounted here (root, and a container that allows it).
        static let canMountTmpfs: Bool = {
            guard isRoot, let directory = try? directory(policy: nil) else { return false }
            defer { try? FileManager.default.removeItem(atPath: directory) }
            guard (try? shell(["/bin/mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", directory])) == 0 else { return false }
            return (try? shell(["/bin/umount", directory])) == 0
        }()

        @discardableResult
        static func shell(_ arguments: [String], in directory: String? = nil, input: String? = nil) throws -> Int32 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: arguments[0])
            process.arguments = Array(arguments.dropFirst())
            if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            let pipe = Pipe()
            if input != nil { process.standardInput = pipe }
            try process.run()
            if let input {
                pipe.fileHandleForWriting.write(Data(input.utf8))
                try pipe.fileHandleForWriting.close()
            }
            process.waitUntilExit()
            return process.terminationStatus
        }

        // MARK: - Concurrent edits

        /// Two bans on one file at once, 20 times: both recorded, the file loads, both exit 0.
        /// (Before the lock one ban was lost every time.) Rounds run two at a time, each on its own file.
        @Test func concurrentBansAreBothRecorded() throws {
            let rounds = 20, together = 2
            for batch in stride(from: 0, to: rounds, by: together) {
                var running: [(policy: String, bans: [Process])] = []
                for _ in batch..<min(rounds, batch + together) {
                    let policy = try Self.directory() + "/p.yaml"
                    let bans = try [(["clflush"], "A"), (["mnemonic=movsb", "prefix=rex"], "B")].map { selector, reason in
                        let process = Process()
                        process.executableURL = Sieve.binary
                        process.arguments = ["ban"] + selector + ["-p", policy, "--reason", reason]
                        process.standardOutput = FileHandle.nullDevice
                        process.standardError = FileHandle.nullDevice
                        try process.run()
                        return process
                    }
                    running.append((policy, bans))
                }
                for (policy, bans) in running {
                    bans.forEach { $0.waitUntilExit() }
                    #expect(bans.map(\.terminationStatus) == [0, 0])
                    let text = try String(contentsOfFile: policy, encoding: .utf8)
                    #expect(try Self.bans(policy).compactMap(\.reason).sorted() == ["A", "B"], "\(text)")
                    Self.remove((policy as NSString).deletingLastPathComponent)
                }
            }
        }

        // MARK: - Full disks and failing writes

        /// A full file system: ban and generate exit 2, and the policy is byte for byte as it was,
        /// with no temporary file left beside it.
        @Test(.enabled(if: FileSafety.canMountTmpfs, "needs root and a mountable tmpfs"))
        func fullDiskLeavesThePolicyWhole() throws {
            let mountPoint = try Self.directory(policy: nil)
            defer { Self.remove(mountPoint) }
            #expect(try Self.shell(["/bin/mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mountPoint]) == 0)
            defer { _ = try? Self.shell(["/bin/umount", mountPoint]) }
            // A policy just under a page (tmpfs allocates pages): the edited one needs a second page,
            // which the old in-place rewrite truncated to, reporting success.
            var text = Self.tiny
            while text.utf8.count < 4070 { text += "# pad\n" }
            let policy = mountPoint + "/p.yaml"
            try Data(text.utf8).write(to: URL(fileURLWithPath: policy))
            // Fill it: one file of zeros until the disk says no.
            #expect(FileManager.default.createFile(atPath: mountPoint + "/filler", contents: nil))
            let filler = try #require(FileHandle(forWritingAtPath: mountPoint + "/filler"))
            while (try? filler.write(contentsOf: Data(count: 4096))) != nil {}
            try? filler.close()
            let before = try Self.entries(mountPoint)
            let ban = try Sieve.run(["ban", "clflush", "-p", policy, "--reason", "full"])
            #expect(ban.status == 2, "\(ban.stdout)\(ban.stderr)")
            #expect(ban.stderr.contains("No space left on device"), "\(ban.stderr)")
            #expect(try Self.contents(policy) == Data(text.utf8), "the policy is untouched")
            #expect(try Self.entries(mountPoint) == before, "no temporary file is left")

            let generate = try Sieve.run(["generate", "-p", policy, "-o", mountPoint + "/verifier"])
            #expect(generate.status == 2, "\(generate.stdout)\(generate.stderr)")
            #expect(!generate.stdout.contains("wrote"))
            #expect(((try? Self.entries(mountPoint + "/verifier")) ?? []) == [], "neither file is there, whole or in part")
        }

        /// Standard output that cannot be written (/dev/full) is exit 2 with a message, not 0.
        @Test func standardOutputToAFullDevice() throws {
            let directory = try Self.directory()
            defer { Self.remove(directory) }
            for arguments in [["generate", "-p", directory + "/p.yaml", "-o", directory + "/verifier"],
                              ["verify", "-p", Sieve.packageRoot.appendingPathComponent("policies/nacl.yaml").path, Self.nacl],
                              ["isa", "clflush"], ["--help"]] {
                let full = try #require(FileHandle(forWritingAtPath: "/dev/full"))
                let result = try Sieve.run(arguments, standardOutput: full)
                #expect(result.status == 2, "\(arguments)")
                #expect(result.stderr.contains("cannot write standard output: No space left on device"), "\(arguments): \(result.stderr)")
            }
        }

        // MARK: - Scratch files

        /// bench builds in a fresh mkdtemp directory under TMPDIR: what was there before (including
        /// the old predictable names) is untouched, and nothing is left afterwards.
        @Test(.enabled(if: FileSafety.hasCC, "needs cc"))
        func benchUsesAFreshTemporaryDirectory() throws {
            let tmp = try Self.directory(policy: nil)
            defer { Self.remove(tmp) }
            let planted = tmp + "/sieve-bench-1"
            try FileManager.default.createDirectory(atPath: planted, withIntermediateDirectories: false)
            try Data("planted".utf8).write(to: URL(fileURLWithPath: planted + "/bench.c"))
            try Data("planted".utf8).write(to: URL(fileURLWithPath: tmp + "/sieve-capture-1"))
            let result = try Sieve.run(["bench", "-p", Sieve.packageRoot.appendingPathComponent("policies/nacl.yaml").path,
                                        Self.nacl, "--passes", "1"], environment: ["TMPDIR": tmp])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("MiB/s (cc -O2)"), "the C verifier was built and run: \(result.stdout)")
            #expect(try Self.entries(tmp) == ["sieve-bench-1", "sieve-capture-1"], "nothing left in TMPDIR")
            #expect(try Self.entries(planted) == ["bench.c"])
            #expect(try Self.contents(planted + "/bench.c") == Data("planted".utf8))
            #expect(try Self.contents(tmp + "/sieve-capture-1") == Data("planted".utf8))
        }

        @Test func benchPassesOutOfRangeIsAUsageError() throws {
            let directory = try Self.directory()
            defer { Self.remove(directory) }
            let policy = directory + "/p.yaml"
            for passes in ["0", "-1", "1000001"] {
                let result = try Sieve.run(["bench", "-p", policy, Self.nacl, "--passes=" + passes])
                #expect(result.status == 2, "--passes \(passes)")
                #expect(result.stderr.contains("--passes must be from 1"), "\(result.stderr)")
            }
        }

        // MARK: - Arguments checked before anything is written

        /// `--out afile/sub` is refused before the policy is touched; run twice, nothing is duplicated.
        @Test func anUnusableOutDirectoryChangesNothing() throws {
            let directory = try Self.directory()
            defer { Self.remove(directory) }
            let policy = directory + "/p.yaml"
            try Data("a file".utf8).write(to: URL(fileURLWithPath: directory + "/afile"))
            for _ in 0..<2 {
                let result = try Sieve.run(["ban", "clflush", "-p", policy, "--reason", "r", "--out", directory + "/afile/sub"])
                #expect(result.status == 2)
                #expect(result.stderr.contains("afile"), "\(result.stderr)")
                #expect(try Self.contents(policy) == Data(Self.tiny.utf8))
            }
            let unreadable = try Sieve.run(["ban", "clflush", "-p", policy, "--reason", "r", "--corpus", directory + "/missing"])
            #expect(unreadable.status == 2 && unreadable.stderr.contains("missing"))
            #expect(try Self.contents(policy) == Data(Self.tiny.utf8))
            #expect(try Self.entries(directory) == ["afile", "p.yaml"])
            let good = try Sieve.run(["ban", "clflush", "-p", policy, "--reason", "r", "--out", directory + "/out/verifier"])
            #expect(good.status == 0, "\(good.stderr)")
            #expect(try Self.bans(policy).count == 1)
            #expect(try Self.entries(directory + "/out/verifier") == ["sieve_verifier.c", "sieve_verifier.h"])
        }

        // MARK: - What is kept

        /// A symbolic link stays a link and its target is edited; the mode (0640) stays; a CRLF
        /// policy stays CRLF.
        @Test func linkModeAndLineEndingsAreKept() throws {
            let directory = try Self.directory()
            defer { Self.remove(directory) }
            let target = directory + "/p.yaml", link = directory + "/link.yaml"
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "p.yaml")
            #expect(chmod(target, 0o640) == 0)
            let result = try Sieve.run(["ban", "clflush", "-p", link, "--reason", "r"])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == "p.yaml")
            #expect(try Self.bans(target).count == 1)
            var status = stat()
            #expect(stat(target, &status) == 0 && status.st_mode & 0o7777 == 0o640)
            #expect(try Self.entries(directory) == ["link.yaml", "p.yaml"], "no temporary file is left")

            let crlf = directory + "/crlf.yaml"
            try Data(Self.tiny.replacingOccurrences(of: "\n", with: "\r\n").utf8).write(to: URL(fileURLWithPath: crlf))
            let edited = try Sieve.run(["ban", "mnemonic=movsb", "prefix=rex", "-p", crlf, "--reason", "r"])
            #expect(edited.status == 0, "\(edited.stderr)")
            let bytes = [UInt8](try Self.contents(crlf))
            let lineFeeds = bytes.indices.filter { bytes[$0] == 10 }
            #expect(lineFeeds.count > 8 && lineFeeds.allSatisfy { $0 > 0 && bytes[$0 - 1] == 13 }, "every line ends CR LF")
            #expect(try Self.bans(crlf).count == 1)
        }

        // MARK: - The dry run

        /// The --dry-run diff applies with git apply and patch -p0, and gives the file a real run writes.
        @Test func dryRunDiffApplies() throws {
            for policy in [Self.tiny, Self.tiny.replacingOccurrences(of: "\n", with: "\r\n"),
                           Self.tiny + "ban:\n  - mnemonic: rdtsc\n    reason: timing\n# the end\n"] {
                let dry = try Self.directory(policy: policy), real = try Self.directory(policy: policy)
                defer { Self.remove(dry); Self.remove(real) }
                let arguments = ["ban", "mnemonic=movsb", "prefix=rex", "-p", "p.yaml", "--reason", "Reptar", "--ref", "CVE-2023-23583"]
                let diff = try Sieve.run(arguments + ["--dry-run"], in: dry)
                #expect(diff.status == 0, "\(diff.stderr)")
                #expect(try Self.contents(dry + "/p.yaml") == Data(policy.utf8), "a dry run changes nothing")
                #expect(try Self.shell(["/usr/bin/git", "apply", "--check"], in: dry, input: diff.stdout) == 0, "\(diff.stdout)")
                if Self.hasPatch {
                    #expect(try Self.shell(["/usr/bin/patch", "-p0", "--dry-run"], in: dry, input: diff.stdout) == 0, "\(diff.stdout)")
                }
                #expect(try Self.shell(["/usr/bin/git", "apply"], in: dry, input: diff.stdout) == 0)
                #expect(try Sieve.run(arguments, in: real).status == 0)
                #expect(try Self.contents(dry + "/p.yaml") == Self.contents(real + "/p.yaml"), "the diff gives what a real run writes")
            }
        }

        // MARK: - Hostile values

        /// A selector value or key that could add YAML structure: an unknown key is a usage error;
        /// a value is written as one quoted scalar, which the loader then rejects as an unknown
        /// name (exit 2, the policy untouched). A reason is free text: it round-trips as given.
        @Test func hostileValuesCannotAddKeys() throws {
            let directory = try Self.directory()
            defer { Self.remove(directory) }
            let policy = directory + "/p.yaml"
            for selector in ["mnemonic=clflush\nallow: [{group: base}]", "register=rax: x", "mnemonic=clflush # x", "group={a: b}",
                             "reason=x", "mnemonic\n=x", "operand-size=32\"\nprefix: rex"] {
                let result = try Sieve.run(["ban", selector, "-p", policy, "--reason", "r"])
                #expect(result.status == 2, "\(selector)")
                #expect(try Self.contents(policy) == Data(Self.tiny.utf8), "\(selector)")
            }
            let reason = "line one\nallow: [{group: base}]\n# \"quoted\" {braces}: and \\ backslash\r\u{1}"
            let result = try Sieve.run(["ban", "clflush", "-p", policy, "--reason", reason, "--ref", "a\nb: c"])
            #expect(result.status == 0, "\(result.stderr)")
            let bans = try Self.bans(policy)
            #expect(bans.count == 1 && bans.first?.reason == reason && bans.first?.refs == ["a\nb: c"])
            guard case .mapping(let top, _)? = try YAMLReader.parse(Array(try Self.contents(policy))) else {
                Issue.record("not a mapping")
                return
            }
            #expect(top.compactMap(\.key.scalar) == ["sieve", "name", "sandbox", "allow", "ban"], "no key was added")
        }
    }
}
