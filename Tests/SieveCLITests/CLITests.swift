import Foundation
import Testing

/// The `sieve` executable as users run it: arguments in, standard output and exit status out.
struct Sieve {
    static let binary: URL = {
        // SIEVE_BINARY runs the CLI tests against another build (an older sieve, to see a test fail there).
        if let path = ProcessInfo.processInfo.environment["SIEVE_BINARY"] { return URL(fileURLWithPath: path) }
        // The test bundle lives beside the products in .build/<configuration>/.
        var url = Bundle.main.bundleURL
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("sieve").path) && url.path != "/" {
            url.deleteLastPathComponent()
        }
        return url.appendingPathComponent("sieve")
    }()

    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let corpus = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/corpus")

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
        var lines: [String] { stdout.split(separator: "\n").map(String.init) }
        func json() throws -> Any { try JSONSerialization.jsonObject(with: Data(stdout.utf8)) }
    }

    static func run(_ arguments: String...) throws -> Result { try run(arguments) }

    /// Runs the binary (or `executable`) in a working directory, with extra environment
    /// variables, or with standard output sent to a file instead of a pipe. Standard error is read
    /// on another thread, so a child filling one pipe never waits on the other.
    static func run(_ arguments: [String], in directory: String? = nil, environment: [String: String] = [:],
                    standardOutput: FileHandle? = nil, executable: String? = nil) throws -> Result {
        let process = Process()
        process.executableURL = executable.map(URL.init(fileURLWithPath:)) ?? binary
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = standardOutput ?? out
        process.standardError = err
        try process.run()
        final class Box: @unchecked Sendable { var data = Data() }
        let stderr = Box(), done = DispatchSemaphore(value: 0)
        let errors = err.fileHandleForReading
        DispatchQueue.global().async { stderr.data = errors.readDataToEndOfFile(); done.signal() }
        let stdout = standardOutput == nil ? out.fileHandleForReading.readDataToEndOfFile() : Data()
        done.wait()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                      stderr: String(decoding: stderr.data, as: UTF8.self))
    }

    static func temporaryFile(_ bytes: [UInt8]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-\(UUID().uuidString).bin").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }
}

@Suite struct ISACommandTests {
    @Test func queryAsJSON() throws {
        let result = try Sieve.run("isa", "clflush", "--format", "json")
        #expect(result.status == 0)
        let forms = try #require(try result.json() as? [[String: Any]])
        let clflush = try #require(forms.first { $0["id"] as? String == "clflush_m8" })
        #expect(clflush["mnemonic"] as? String == "clflush")
        #expect(clflush["extension"] as? String == "clfsh")
        #expect(clflush["opcode"] as? String == "NP 0F AE /7")
    }

    @Test func everyFormWithoutQuery() throws {
        let result = try Sieve.run("isa", "--format", "json")
        let forms = try #require(try result.json() as? [[String: Any]])
        #expect(forms.count >= 4300)
        #expect(forms.allSatisfy { $0["id"] is String && $0["mnemonic"] is String && $0["extension"] is String })
    }

    @Test func textListsCountsPerExtension() throws {
        let result = try Sieve.run("isa", "rtm")
        #expect(result.status == 0)
        #expect(result.stdout.contains("xbegin_rel32"))
        #expect(result.lines.contains { $0.trimmingCharacters(in: .whitespaces).hasPrefix("rtm") })
    }

    @Test func noMatchIsExitOne() throws {
        #expect(try Sieve.run("isa", "no-such-instruction").status == 1)
    }
}

@Suite struct DisasmCommandTests {
    @Test func naclExecutableAsJSONLines() throws {
        let nexe = Sieve.corpus.appendingPathComponent("nacl/x64_hello_world.nexe").path
        let result = try Sieve.run("disasm", nexe, "--format", "jsonl")
        #expect(result.status == 0)
        var next = 0, movnti = 0, prefetchnta = 0, invalid = 0
        for line in result.lines {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let offset = try #require(object["offset"] as? Int)
            let length = try #require(object["length"] as? Int)
            #expect(offset == next)
            next = offset + length
            if object["invalid"] as? Bool == true { invalid += 1 }
            if object["mnemonic"] as? String == "movnti" { movnti += 1 }
            if object["mnemonic"] as? String == "prefetchnta" { prefetchnta += 1 }
        }
        #expect(next == 0x7600)  // the executable segment's size (readelf)
        #expect((movnti, prefetchnta, invalid) == (32, 2, 0))
    }

    @Test func rawCodeWithRefusedAndInvalidBytes() throws {
        // call with 0x66 (refused), ud2, then a lone 0F: not an instruction.
        let path = try Sieve.temporaryFile([0x66, 0xE8, 0, 0, 0, 0, 0x0F, 0x0B, 0x0F])
        let result = try Sieve.run("disasm", "--raw", "--base", "0x1000", "--format", "jsonl", path)
        #expect(result.status == 0)
        let records = try result.lines.map { try #require(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        #expect(records.count == 3)
        #expect(records[0]["form"] as? String == "call_rel32_64")
        #expect(records[0]["refused"] is String)
        #expect(records[0]["address"] as? Int == 0x1000)
        #expect(records[1]["mnemonic"] as? String == "ud2")
        #expect(records[2]["invalid"] as? Bool == true)
        #expect(records[2]["offset"] as? Int == 8)
        #expect(records[2]["length"] as? Int == 1)
    }

    @Test func textListingShowsCapstoneRendering() throws {
        let path = try Sieve.temporaryFile([0x48, 0x89, 0xE5, 0x0F, 0xAE, 0x38])
        let result = try Sieve.run("disasm", "--raw", path)
        #expect(result.stdout.contains("mov rbp, rsp"))
        #expect(result.stdout.contains("clflush_m8"))
    }

    @Test func inputErrorsAreExitTwo() throws {
        let missing = try Sieve.run("disasm", "/no/such/file")
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("/no/such/file"))
        let notELF = try Sieve.run("disasm", try Sieve.temporaryFile([1, 2, 3]))
        #expect(notELF.status == 2)
        #expect(notELF.stderr.contains("not an ELF"))
        #expect(try Sieve.run("disasm", "--format", "yaml", "x").status != 0)
    }
}

@Suite struct PolicyCommandTests {
    static func policy(_ name: String) -> String { Sieve.packageRoot.appendingPathComponent("policies/" + name).path }

    static func temporaryPolicy(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-\(UUID().uuidString).yaml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func checkSummarisesAShippedProfile() throws {
        let result = try Sieve.run("check", Self.policy("standard.yaml"), "--format", "json")
        #expect(result.status == 0, "\(result.stderr)")
        let json = try #require(try result.json() as? [String: Any])
        let accepted = try #require(json["accepted"] as? [String: Any])
        #expect((accepted["forms"] as? Int ?? 0) > 1900)
        #expect((json["sandbox"] as? [String: Any])?["model"] as? String == "nacl-x86-64")
    }

    @Test func checkWritesTheWitnessOfATuringCompleteProfile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-witness-\(UUID().uuidString)").path
        let result = try Sieve.run("check", Self.policy("paranoid.yaml"), "--witness", dir, "--format", "json")
        #expect(result.status == 0, "\(result.stderr)")
        let json = try #require(try result.json() as? [String: Any])
        let turing = try #require(json["turing"] as? [String: Any])
        #expect(turing["verdict"] as? String == "turing-complete")
        #expect(turing["model"] as? String == "subleq-interpreter")
        let witness = try #require(turing["witness"] as? [String: Any])
        let code = try Data(contentsOf: URL(fileURLWithPath: dir + "/witness.bin"))
        #expect(witness["bytes"] as? Int == code.count && code.count % 32 == 0)
        #expect((witness["forms"] as? [String])?.contains("sub_rm64_r64") == true)
        let listing = try String(contentsOfFile: dir + "/witness.s", encoding: .utf8)
        #expect(listing.contains("jle take") && listing.contains("# bundle 0"))
        #expect(FileManager.default.fileExists(atPath: dir + "/layout.txt") && FileManager.default.fileExists(atPath: dir + "/data.bin"))
        let text = try Sieve.run("check", Self.policy("minimal.yaml"))
        #expect(text.status == 0 && text.stdout.contains("turing: turing-complete (subleq-interpreter"), "\(text.stdout)")
    }

    @Test func checkExitsOneAndWritesNothingForAnotherVerdict() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-witness-\(UUID().uuidString)").path
        let path = try Self.temporaryPolicy("sieve: 1\nname: movs\nallow: [{group: base, mnemonic: mov}]\n")
        let result = try Sieve.run("check", path, "--witness", dir)
        #expect(result.status == 1)
        #expect(result.stdout.contains("turing: not-turing-complete"))
        #expect(result.stdout.contains("lemma: NL1"))
        #expect(result.stdout.contains("repair: allow `JMP rel32` (jmp_rel32_64)"), "\(result.stdout)")
        #expect(!FileManager.default.fileExists(atPath: dir))
        let json = try #require(try Sieve.run("check", path, "--format", "json").json() as? [String: Any])
        let turing = try #require(json["turing"] as? [String: Any])
        #expect(turing["verdict"] as? String == "not-turing-complete" && turing["witness"] is NSNull)
        #expect(turing["repair"] as? [String] == ["jmp_rel32_64"])
        #expect((turing["missing"] as? [String])?.contains("backward jump") == true)
    }

    @Test func checkExitsOneOnLintAndTwoOnErrors() throws {
        let lint = try Sieve.run("check", try Self.temporaryPolicy("sieve: 1\nname: t\ntrust: [base, timers]\nban: [{mnemonic: clflush}]\n"))
        #expect(lint.status == 1)
        #expect(lint.stderr.contains("a ban needs a 'reason'"))
        #expect(lint.stderr.contains("sensitive group 'timers'"))
        let path = try Self.temporaryPolicy("sieve: 1\nname: t\nban: [{mnemonic: clflsh, reason: r}]\n")
        let broken = try Sieve.run("check", path)
        #expect(broken.status == 2)
        #expect(broken.stderr.contains("\(path):3:18: error: unknown mnemonic 'clflsh'"), "\(broken.stderr)")
        #expect(broken.stderr.contains("did you mean 'clflush'?"))
    }

    @Test func explainNamesTheDecidingRule() throws {
        let refused = try Sieve.run("explain", "-p", Self.policy("hardened.yaml"), "0f ae 38", "--format", "json")
        #expect(refused.status == 1)
        let json = try #require(try refused.json() as? [String: Any])
        #expect(json["accepted"] as? Bool == false)
        #expect(json["form"] as? String == "clflush_m8")
        let rule = try #require(json["rule"] as? [String: Any])
        #expect((rule["file"] as? String)?.hasSuffix("policies/hardened.yaml") == true)
        #expect(rule["line"] as? Int == 9)
        #expect((rule["refs"] as? [String])?.contains("CVE-2015-0565") == true)

        #expect(try Sieve.run("explain", "-p", Self.policy("errata/reptar.yaml"), "f3 48 a4").status == 1)
        #expect(try Sieve.run("explain", "-p", Self.policy("errata/reptar.yaml"), "f3 a4").status == 0)
        #expect(try Sieve.run("explain", "-p", Self.policy("standard.yaml"), "jz").status == 0)
    }

    @Test func explainJudgesTheDecoderFirst() throws {
        let invalid = try Sieve.run("explain", "-p", Self.policy("standard.yaml"), "0f 04", "--format", "json")
        #expect(invalid.status == 1)
        #expect((try invalid.json() as? [String: Any])?["invalid"] is String)
        let refused = try Sieve.run("explain", "-p", Self.policy("standard.yaml"), "66 e8 00 00 00 00", "--format", "json")
        #expect(refused.status == 1)
        #expect((try refused.json() as? [String: Any])?["refused"] is String)
        #expect(try Sieve.run("explain", "-p", Self.policy("standard.yaml"), "not-an-instruction").status == 2)
    }
}

@Suite struct VerifierCommandTests {
    static func policy(_ name: String) -> String { Sieve.packageRoot.appendingPathComponent("policies/" + name).path }
    static let nexe = Sieve.corpus.appendingPathComponent("nacl/x64_hello_world.nexe").path

    @Test func verifyAcceptsANaClExecutable() throws {
        let result = try Sieve.run("verify", "-p", Self.policy("nacl.yaml"), Self.nexe, "--format", "json")
        #expect(result.status == 0, "\(result.stderr)")
        let json = try #require(try result.json() as? [String: Any])
        #expect(json["schema"] as? Int == 1)
        #expect(json["safety_proof"] as? Bool == true)
        let file = try #require((json["files"] as? [[String: Any]])?.first)
        #expect(file["accepted"] as? Bool == true)
        #expect((file["findings"] as? [Any])?.isEmpty == true)
        #expect(file["instructions"] as? Int == 6766)
    }

    @Test func verifyReportsFindingsWithTheirRule() throws {
        let result = try Sieve.run("verify", "-p", Self.policy("hardened.yaml"), Self.nexe, "--format", "json")
        #expect(result.status == 1)
        let json = try #require(try result.json() as? [String: Any])
        let findings = try #require((json["files"] as? [[String: Any]])?.first?["findings"] as? [[String: Any]])
        let clflushFree = findings.filter { $0["mnemonic"] as? String == "prefetchnta" }
        #expect(clflushFree.count == 2)
        #expect(findings.allSatisfy { $0["offset"] is Int && $0["address"] is Int && $0["kind"] is String && $0["bytes"] is String })
        let banned = try #require(clflushFree.first)
        #expect(banned["kind"] as? String == "banned")
        #expect(((banned["rule"] as? [String: Any])?["file"] as? String)?.hasSuffix("hardened.yaml") == true)
    }

    @Test func modelNoneSaysItIsNoProof() throws {
        let path = try Sieve.temporaryFile([0x8B, 0x00, 0xC3])
        let result = try Sieve.run("verify", "-p", Self.policy("standard.yaml"), "--raw", "--model", "none", path)
        #expect(result.status == 0)
        #expect(result.stdout.contains("not a safety proof"))
    }

    @Test func generateWritesADeterministicVerifier() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-gen-\(UUID().uuidString)").path
        #expect(try Sieve.run("generate", "-p", Self.policy("nacl.yaml"), "-o", dir).status == 0)
        let first = try String(contentsOfFile: dir + "/sieve_verifier.c", encoding: .utf8)
        #expect(try Sieve.run("generate", "-p", Self.policy("nacl.yaml"), "-o", dir).status == 0)
        #expect(try String(contentsOfFile: dir + "/sieve_verifier.c", encoding: .utf8) == first)
        #expect(first.hasPrefix("/*\n * GENERATED by `sieve generate`"))
        #expect(FileManager.default.fileExists(atPath: dir + "/sieve_verifier.h"))
    }
}

@Suite struct MapCommandTests {
    static func policy(_ name: String) -> String { Sieve.packageRoot.appendingPathComponent("policies/" + name).path }

    @Test func writesTheMapAndSummarises() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-map-\(UUID().uuidString).svg").path
        let result = try Sieve.run("map", "-p", Self.policy("errata/rowhammer.yaml"), "--against", Self.policy("standard.yaml"), "-o", path)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("wrote \(path): Opcode map: standard + Rowhammer against standard, 16 grids of 256 cells: "))
        #expect(result.stdout.contains(" newly refused, "))
        let svg = try String(contentsOfFile: path, encoding: .utf8)
        #expect(svg.hasPrefix("<?xml") && svg.hasSuffix("</svg>\n"))
    }

    @Test func errorsAreExitTwo() throws {
        let missing = try Sieve.run("map", "-p", "/no/such/policy.yaml", "-o", "/tmp/sieve-map-unused.svg")
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("/no/such/policy.yaml"))
        let unwritable = try Sieve.run("map", "-p", Self.policy("standard.yaml"), "-o", "/no/such/folder/map.svg")
        #expect(unwritable.status == 2)
        #expect(unwritable.stderr.contains("cannot write /no/such/folder/map.svg"))
    }
}

@Suite struct ScanCommandTests {
    static func policy(_ name: String) -> String { Sieve.packageRoot.appendingPathComponent("policies/" + name).path }
    static let naclCorpus = Sieve.corpus.appendingPathComponent("nacl").path

    @Test func listsTheSitesOfABanAsJSON() throws {
        let policy = try PolicyCommandTests.temporaryPolicy("""
            sieve: 1
            name: nacl without non-temporal hints
            extends: \(Self.policy("nacl.yaml"))
            ban: [{class: non-temporal, reason: cache-bypassing stores hammer DRAM rows, refs: [CVE-2015-0565]}]

            """)
        let result = try Sieve.run("scan", "-p", policy, Self.naclCorpus, "--format", "json", "--sites", "--workers", "2")
        #expect(result.status == 1, "\(result.stderr)")
        #expect(result.stderr.isEmpty)  // no progress line in a pipe
        let json = try #require(try result.json() as? [String: Any])
        #expect(json["schema"] as? Int == 1 && json["safety_proof"] as? Bool == true && json["workers"] as? Int == 2)
        #expect(json["model"] as? String == "nacl-x86-64")
        let files = try #require(json["files"] as? [[String: Any]])
        #expect(files.map { ($0["path"] as? String)?.hasSuffix(".nexe") } == [true, true])
        for file in files {
            #expect(file["accepted"] as? Bool == false && file["findings"] as? Int == 34 && file["error"] is NSNull)
            let sites = try #require(file["sites"] as? [[String: Any]])
            #expect(sites.count == 34)
            #expect(sites.filter { $0["mnemonic"] as? String == "movnti" }.count == 32)
            #expect(sites.allSatisfy { $0["address"] is Int && $0["offset"] is Int && $0["bytes"] is String && $0["kind"] as? String == "banned" })
            #expect(sites.allSatisfy { (($0["rule"] as? [String: Any])?["refs"] as? [String]) == ["CVE-2015-0565"] })
        }
        let forms = try #require(json["forms"] as? [[String: Any]])
        #expect(forms.map { "\($0["form"] ?? "") \($0["count"] ?? "")" } == ["movnti_m64_r64 64", "prefetchnta_m8 4"])
        let totals = try #require(json["totals"] as? [String: Any])
        #expect(totals["files"] as? Int == 2 && totals["refused"] as? Int == 2 && totals["findings"] as? Int == 68)
        #expect(json["seconds"] is Double || json["seconds"] is Int)

        let withoutSites = try #require(try Sieve.run("scan", "-p", policy, Self.naclCorpus, "--format", "json").json() as? [String: Any])
        #expect((withoutSites["files"] as? [[String: Any]])?.allSatisfy { $0["sites"] == nil } == true)
    }

    @Test func acceptedCorpusIsExitZero() throws {
        let result = try Sieve.run("scan", "-p", Self.policy("nacl.yaml"), Self.naclCorpus, "--workers", "1")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.lines.first == "\(Self.naclCorpus)/x64_fib_array_v2.nexe: 40267 instructions, 203072 bytes: accepted")
        #expect(result.stdout.contains("2 files: 2 accepted, 0 refused, 0 skipped, 0 errors;"))
        #expect(result.stdout.contains(", 1 worker\n"))
        #expect(!result.stdout.contains("safety proof"))
    }

    @Test func modelNoneSkipsWhatItCannotVerifyAndSaysItIsNoProof() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-scan-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data([0x7F, 0x45, 0x4C, 0x46, 1, 1, 1, 0]).write(to: URL(fileURLWithPath: dir + "/elf32"))
        try "not code".write(toFile: dir + "/notes.txt", atomically: true, encoding: .utf8)
        let result = try Sieve.run("scan", "-p", Self.policy("nacl.yaml"), "--model", "none", dir, Self.naclCorpus + "/x64_hello_world.nexe")
        #expect(result.status == 0, "\(result.stdout)")
        // (Files are listed sorted by path, and where the corpus sits varies: look for the line.)
        #expect(result.lines.contains("\(dir)/elf32: skipped: ELF32 files are not supported (EI_CLASS at file offset 0x4 is 1)"))
        #expect(!result.stdout.contains("notes.txt"))
        #expect(result.stdout.contains("2 files: 1 accepted, 0 refused, 1 skipped, 0 errors;"))
        #expect(result.stdout.contains("not a safety proof"))
        let json = try #require(try Sieve.run("scan", "-p", Self.policy("standard.yaml"), "--model", "none", dir, "--format", "json").json() as? [String: Any])
        #expect(json["safety_proof"] as? Bool == false && json["model"] as? String == "none")
    }

    @Test func inputErrorsAreExitTwo() throws {
        let missing = try Sieve.run("scan", "-p", Self.policy("nacl.yaml"), "/no/such/corpus")
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("cannot read /no/such/corpus"))
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-scan-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let nothing = try Sieve.run("scan", "-p", Self.policy("nacl.yaml"), empty)
        #expect(nothing.status == 2 && nothing.stderr.contains("no ELF file under \(empty)"))
        let workers = try Sieve.run("scan", "-p", Self.policy("nacl.yaml"), Self.naclCorpus, "--workers", "0")
        #expect(workers.status == 2 && workers.stderr.contains("--workers must be at least 1"))
        #expect(try Sieve.run("scan", "-p", Self.policy("nacl.yaml"), Self.naclCorpus, "--model", "lfi").status == 2)
        #expect(try Sieve.run("scan", "-p", "/no/such/policy.yaml", Self.naclCorpus).status == 2)
    }
}
