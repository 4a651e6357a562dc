import Foundation
import Testing

extension Sieve {
    /// Runs `sieve` with the package root as the working directory (paths in output stay relative).
    static func runInPackage(_ arguments: String...) throws -> Result {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.currentDirectoryURL = packageRoot
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile(), stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                      stderr: String(decoding: stderr, as: UTF8.self))
    }

    /// A fresh folder holding a copy of a shipped profile (so `extends` still resolves beside it).
    static func copyOfProfile(_ name: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-ban-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent(name).path
        try FileManager.default.copyItem(atPath: packageRoot.appendingPathComponent("policies/" + name).path, toPath: path)
        // The profiles it extends (`extends: nacl-2015` is a file beside it), untouched by the edit.
        for parent in ["nacl-2015.yaml", "standard.yaml"] where parent != name {
            try FileManager.default.copyItem(atPath: packageRoot.appendingPathComponent("policies/" + parent).path,
                                             toPath: dir.appendingPathComponent(parent).path)
        }
        return path
    }
}

@Suite struct DiffCommandTests {
    /// The diff JSON, golden: re-record with SIEVE_RECORD=1.
    @Test func jsonIsGolden() throws {
        let result = try Sieve.runInPackage("diff", "policies/standard.yaml", "policies/hardened.yaml", "--format", "json")
        #expect(result.status == 1, "the policies differ")
        let golden = Sieve.packageRoot.appendingPathComponent("Tests/SieveCLITests/Fixtures/diff-standard-hardened.json")
        if ProcessInfo.processInfo.environment["SIEVE_RECORD"] != nil {
            try result.stdout.write(to: golden, atomically: true, encoding: .utf8)
        }
        let expected = try String(contentsOf: golden, encoding: .utf8)
        #expect(result.stdout == expected, "re-record with SIEVE_RECORD=1 swift test --filter jsonIsGolden")
    }

    @Test func noNewAccessHoldsOneWayOnly() throws {
        let forward = try Sieve.runInPackage("diff", "policies/standard.yaml", "policies/hardened.yaml", "--no-new-access")
        #expect(forward.status == 0)
        #expect(forward.stdout.contains("new access: none"))
        let backward = try Sieve.runInPackage("diff", "policies/hardened.yaml", "policies/standard.yaml", "--no-new-access")
        #expect(backward.status == 1)
        #expect(backward.stdout.contains("  clflush_m8"), "the new forms are listed")
        let same = try Sieve.runInPackage("diff", "policies/standard.yaml", "policies/standard.yaml")
        #expect(same.status == 0)
        let markdown = try Sieve.runInPackage("diff", "policies/standard.yaml", "policies/hardened.yaml", "--format", "markdown")
        #expect(markdown.stdout.contains("| removed | clfsh | clflush | 1 |"))
        #expect(try Sieve.runInPackage("diff", "policies/standard.yaml", "no-such.yaml").status == 2)
    }
}

@Suite struct BanCommandTests {
    @Test func banningClflushEndToEnd() throws {
        let policy = try Sieve.copyOfProfile("standard.yaml")
        let original = try String(contentsOfFile: policy, encoding: .utf8)
        let out = (policy as NSString).deletingLastPathComponent + "/verifier"
        let result = try Sieve.run("ban", "clflush", "-p", policy, "--reason", "Rowhammer", "--ref", "CVE-2015-0565",
                                   "--corpus", Sieve.corpus.appendingPathComponent("nacl").path, "--out", out)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("now refused: 1 form: clflush_m8"))
        #expect(result.stdout.contains("corpus: 2 files; 0 newly refused"))
        for step in ["resolve", "compile", "generate", "turing", "scan"] { #expect(result.stdout.contains(step + " "), "\(step) is timed") }
        let edited = try String(contentsOfFile: policy, encoding: .utf8)
        #expect(edited.hasPrefix(original), "the file is only appended to: comments and order stay")
        #expect(edited.contains("  - mnemonic: \"clflush\"\n    reason: \"Rowhammer\"\n    refs: [\"CVE-2015-0565\"]\n"))
        let explain = try Sieve.run("explain", "-p", policy, "0f ae 38")
        #expect(explain.status == 1 && explain.stdout.contains("refused"))
        #expect(FileManager.default.fileExists(atPath: out + "/sieve_verifier.c"))
    }

    @Test func aBanThatBreaksTheCorpusListsTheSites() throws {
        let policy = try Sieve.copyOfProfile("nacl.yaml")
        let result = try Sieve.run("ban", "class=non-temporal", "-p", policy, "--reason", "non-temporal hints",
                                   "--corpus", Sieve.corpus.appendingPathComponent("nacl").path)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("corpus: 2 files; 2 newly refused, 68 new sites"))
        #expect(result.stdout.contains("movnti qword ptr [r15 + rdi], rax"))
        // Ordinary binaries: the corpus under model none (the policy's own model stays).
        let audit = try Sieve.run("ban", "mnemonic=movsb", "prefix=rex", "-p", policy, "--reason", "Reptar",
                                  "--corpus", Sieve.corpus.appendingPathComponent("nacl").path, "--model", "none")
        #expect(audit.status == 0 && audit.stdout.contains("corpus: 2 files; 0 newly refused, 0 new sites"), "\(audit.stdout)")
        let before = try String(contentsOfFile: policy, encoding: .utf8)
        #expect(try Sieve.run("ban", "clflush", "-p", policy, "--reason", "r", "--corpus", "/no/such/dir").status == 2)
        #expect(try String(contentsOfFile: policy, encoding: .utf8) == before, "a bad corpus stops the ban before it is written")
    }

    @Test func aBanThatLosesTuringCompletenessIsRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-ban-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let policy = dir.appendingPathComponent("movs.yaml").path
        let text = "sieve: 1\nname: movs\nallow:\n  - group: base\n    mnemonic: [mov, jmp]\n"
        try text.write(toFile: policy, atomically: true, encoding: .utf8)
        let refused = try Sieve.run("ban", "jmp", "-p", policy, "--reason", "test")
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("backward jump"))
        #expect(try String(contentsOfFile: policy, encoding: .utf8) == text, "nothing is written")
        let dry = try Sieve.run("ban", "jmp", "-p", policy, "--reason", "test", "--dry-run")
        #expect(dry.status == 0 && dry.stdout.contains("+  - mnemonic: \"jmp\""))
        #expect(try String(contentsOfFile: policy, encoding: .utf8) == text)
        let forced = try Sieve.run("ban", "jmp", "-p", policy, "--reason", "test", "--force")
        #expect(forced.status == 0 && forced.stdout.contains("turing: turing-complete -> not-turing-complete"))
        let broken = try Sieve.run("ban", "mnemonic=clflsh", "-p", policy, "--reason", "typo")
        #expect(broken.status == 2 && broken.stderr.contains("did you mean 'clflush'?"), "\(broken.stderr)")
    }
}
