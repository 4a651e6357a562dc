import Foundation
import Testing

extension HostileInputTests {
    /// Policies as an attacker, or an accident, writes them (DESIGN §12): missing, a directory,
    /// over the size limit, nested to the size limit, alias bombs, bad bytes, long `extends`
    /// chains, and a megabyte of rules, which used to take minutes to resolve. Each must end
    /// with exit status 2 and a `file:line:col` diagnostic, or load, never with a signal.
    @Suite struct PolicyInput {
        static let head = "sieve: 1\nname: hostile\n"

        /// A fresh folder holding `files`; returns its path.
        static func folder(_ files: [String: [UInt8]]) throws -> String {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-hostile-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            for (name, bytes) in files { try Data(bytes).write(to: dir.appendingPathComponent(name)) }
            return dir.path
        }

        static func policy(_ bytes: [UInt8]) throws -> String { try folder(["main.yaml": bytes]) + "/main.yaml" }
        static func policy(_ text: String) throws -> String { try policy(Array(text.utf8)) }

        /// `sieve check PATH` with standard output discarded; nil when it outlived `timeout`.
        static func check(_ path: String, timeout: Double = 120) throws -> (status: Int32, exited: Bool, stderr: String)? {
            let process = Process()
            process.executableURL = Sieve.binary
            process.arguments = ["check", path]
            let errors = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-hostile-\(UUID().uuidString).err")
            _ = FileManager.default.createFile(atPath: errors.path, contents: nil)
            let handle = try FileHandle(forWritingTo: errors)
            defer { try? FileManager.default.removeItem(at: errors) }
            process.standardOutput = FileHandle.nullDevice
            process.standardError = handle
            try process.run()
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning {
                process.terminate()
                process.waitUntilExit()
                return nil
            }
            try handle.close()
            let text = String(decoding: try Data(contentsOf: errors), as: UTF8.self)
            return (process.terminationStatus, process.terminationReason == .exit, text)
        }

        /// Exit status 2, not a signal, and an error at `file:line:col` saying `message`.
        static func expectError(_ path: String, _ message: String, at location: String? = nil,
                                sourceLocation: SourceLocation = #_sourceLocation) throws {
            let result = try #require(try check(path), "timed out", sourceLocation: sourceLocation)
            #expect(result.exited, "killed by signal \(result.status)", sourceLocation: sourceLocation)
            #expect(result.status == 2, "\(result.stderr.prefix(500))", sourceLocation: sourceLocation)
            #expect(result.stderr.contains(message), "\(result.stderr.prefix(500))", sourceLocation: sourceLocation)
            let first = result.stderr.split(separator: "\n").first.map(String.init) ?? ""
            #expect(first.hasPrefix((location ?? path) + ":"), "\(first)", sourceLocation: sourceLocation)
            #expect(first.contains(": error: "), "\(first)", sourceLocation: sourceLocation)
        }

        // MARK: - Files that cannot be read

        @Test func missingPolicyNamesThePathAndTheReason() throws {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-missing-\(UUID().uuidString).yaml").path
            try Self.expectError(path, "cannot read the policy file: No such file or directory", at: path + ":1:1")
        }

        @Test func directoryAsPolicy() throws {
            let dir = try Self.folder([:])
            try Self.expectError(dir, "cannot read the policy file: Is a directory")
        }

        @Test func oversizePolicyPrintsItsRealSize() throws {
            // 3 MiB: the old reader stopped at 1 MiB + 64 KiB and printed that as the size.
            let text = Self.head + "description: " + String(repeating: "x", count: 3 << 20) + "\n"
            let path = try Self.policy(text)
            try Self.expectError(path, "the file is \(text.utf8.count) bytes; a policy may have at most 1048576")
        }

        @Test func missingExtendsTargetPointsAtTheExtendsLine() throws {
            let path = try Self.policy(Self.head + "extends: nowhere\n")
            let target = (path as NSString).deletingLastPathComponent + "/nowhere.yaml"
            try Self.expectError(path, "cannot read '\(target)', named by 'extends': No such file or directory", at: path + ":3:10")
        }

        @Test func extendsCycle() throws {
            let dir = try Self.folder(["main.yaml": Array((Self.head + "extends: a\n").utf8),
                                       "a.yaml": Array("sieve: 1\nname: a\nextends: main\n".utf8)])
            try Self.expectError(dir + "/main.yaml", "'extends' makes a cycle: main.yaml -> a.yaml -> main.yaml", at: dir + "/a.yaml:3:10")
        }

        @Test func longExtendsChains() throws {
            // 64 files load; the 65th is refused at the 64th file's extends.
            var files: [String: [UInt8]] = ["p0.yaml": Array((Self.head + "trust: [base]\n").utf8)]
            for i in 1...64 { files["p\(i).yaml"] = Array("sieve: 1\nname: p\(i)\nextends: p\(i - 1)\n".utf8) }
            let dir = try Self.folder(files)
            let fits = try #require(try Self.check(dir + "/p63.yaml"))
            #expect(fits.exited && fits.status == 0, "\(fits.stderr.prefix(500))")
            try Self.expectError(dir + "/p64.yaml", "the 'extends' chain is longer than 64 files", at: dir + "/p1.yaml:3:10")
        }

        // MARK: - Bytes that are not a policy

        @Test func nulByte() throws {
            let path = try Self.policy(Array("sieve: 1\nname: t".utf8) + [0] + Array("\ntrust: [base]\n".utf8))
            try Self.expectError(path, "control characters are not allowed (byte 0x00)", at: path + ":2:8")
        }

        @Test func invalidUTF8() throws {
            let path = try Self.policy(Array("sieve: 1\nname: ".utf8) + [0xC3, 0x28, 0x0A])
            try Self.expectError(path, "invalid trailing UTF-8 octet", at: path + ":2")
        }

        @Test func binaryGarbage() throws {
            let path = try Self.policy((0..<(1 << 16)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) })
            try Self.expectError(path, "YAML")
        }

        // MARK: - Nesting and aliases

        /// Documents nested as deeply as the size limit allows, in each of YAML's ways.
        static let deepDocuments: [(String, String)] = {
            let room = (1 << 20) - 64
            var blockMappings = Self.head + "groups:\n", depth = 1
            while blockMappings.utf8.count + depth + 12 < room {
                blockMappings += String(repeating: " ", count: depth) + "g\(depth):\n"
                depth += 1
            }
            return [
                ("flow lists", Self.head + "ban: " + String(repeating: "[", count: room) + "\n"),
                ("flow mappings", Self.head + "ban: " + String(repeating: "{a: ", count: room / 4) + "\n"),
                ("block lists", Self.head + "ban:\n" + String(repeating: "- ", count: room / 2) + "x\n"),
                ("block mappings", blockMappings),
                ("mixed", Self.head + "ban: " + String(repeating: "[{a: ", count: room / 5) + "\n"),
            ]
        }()

        @Test(arguments: 0..<5)
        func deepNestingIsAnErrorNotACrash(_ index: Int) throws {
            let (name, text) = Self.deepDocuments[index]
            #expect(text.utf8.count <= 1 << 20, "\(name)")
            try Self.expectError(try Self.policy(text), "nested deeper than 64 levels")
        }

        @Test func nestingUpToTheLimitIsReadAsUsual() throws {
            // 64 levels: the document mapping, the `groups` mapping and 62 lists; the selector is then wrong, not too deep.
            let path = try Self.policy(Self.head + "groups:\n  g: " + String(repeating: "[", count: 62) + String(repeating: "]", count: 62) + "\n")
            try Self.expectError(path, "a selector is a mapping")
        }

        @Test func billionLaughsIsRefusedAtTheFirstAnchor() throws {
            var text = Self.head + "x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
            for i in 1...9 { text += "x\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 9).joined(separator: ", ") + "]\n" }
            let path = try Self.policy(text)
            try Self.expectError(path, "YAML anchors are not allowed", at: path + ":3:5")
        }

        @Test func aliasChainsAndBareAliasesAreRefused() throws {
            var chain = Self.head + "groups:\n  g0: &x0 [{mnemonic: add}]\n"
            for i in 1..<20_000 { chain += "  g\(i): &x\(i) *x\(i - 1)\n" }
            try Self.expectError(try Self.policy(chain), "YAML anchors are not allowed")
            try Self.expectError(try Self.policy(Self.head + "trust: [base]\nban: *nothing\n"), "YAML aliases are not allowed")
        }

        // MARK: - Rules

        @Test func instanceRulesOverTheVerifiersLimitAreAnErrorNotACrash() throws {
            // 20 rules with only a prefix apply to every form: 80,000 (rule, form) pairs. This crashed
            // `check` with an integer overflow trap building the verifier's tables.
            let rules = (1...20).map { "  - {prefix: lock, reason: r\($0)}\n" }.joined()
            let path = try Self.policy(Self.head + "trust: [base]\nallow:\n" + rules)
            try Self.expectError(path, "(rule, form) pairs; at most 65535")
            let many = (1...300).map { "  - {mnemonic: add, prefix: lock, reason: r\($0)}\n" }.joined()
            try Self.expectError(try Self.policy(Self.head + "trust: [base]\nallow:\n" + many),
                                 "more than 255 rules with instance fields", at: nil)
        }

        @Test func groupsNestedTooDeeply() throws {
            var text = Self.head + "trust: [g0]\ngroups:\n  g40: [{mnemonic: add}]\n"
            for i in 0..<40 { text += "  g\(i): [{group: g\(i + 1)}]\n" }
            try Self.expectError(try Self.policy(text), "group 'g24' nests groups 17 levels deep; at most 16")
        }

        /// A megabyte-scale policy of each kind, in the debug build: resolution is linear now (a
        /// quarter of a megabyte of repeated trust entries took 40 s in a release build before,
        /// a megabyte over 300 s). The bound is far above the time taken and far below the old one.
        @Test(arguments: ["trust", "ban", "allow"])
        func quarterMegabyteOfRulesResolves(_ kind: String) throws {
            let mnemonics = ["clflush", "lfence", "mfence", "sfence", "rdtsc", "movnti", "pause", "cpuid", "xchg", "bswap"]
            var text = Self.head + (kind == "trust" ? "trust:\n" : kind == "ban" ? "trust: [base]\nban:\n" : "trust: [base]\nallow:\n")
            var i = 0
            while text.utf8.count < 256 << 10 {
                switch kind {
                case "trust": text += "  - base\n"
                case "ban": text += "  - {mnemonic: \(mnemonics[i % mnemonics.count]), reason: Rowhammer}\n"
                default: text += "  - mnemonic: \(mnemonics[i % mnemonics.count])\n"
                }
                i += 1
            }
            let result = try #require(try Self.check(try Self.policy(text), timeout: 60), "over 60 s: resolution is not linear")
            #expect(result.exited && result.status == 0, "\(result.stderr.prefix(500))")
        }
    }
}
