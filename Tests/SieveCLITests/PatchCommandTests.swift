import Foundation
import Testing

/// `sieve patch`: refused instructions rewritten in place, ELF in and ELF out, verified again.
@Suite struct PatchCommandTests {
    static let executables = ["x64_fib_array_v2.nexe", "x64_hello_world.nexe"].map { Sieve.corpus.appendingPathComponent("nacl/" + $0).path }

    static func scratch() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-patch-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func sites(_ file: [String: Any]) -> [[String: Any]] { file["sites"] as? [[String: Any]] ?? [] }

    /// The acceptance case: under NaCl's post-Rowhammer policy each executable has exactly 34
    /// refused instructions (32 movnti, 2 prefetchnta); patched, it verifies, its size is the
    /// same, and no byte outside those 34 instructions changed.
    @Test func naclExecutablesUnderTheNonTemporalBan() throws {
        let out = try Self.scratch()
        let result = try Sieve.run(["patch", "-p", Sieve.packageRoot.path + "/policies/nacl-2015.yaml"] + Self.executables
                                   + ["-o", out, "--format", "json"])
        #expect(result.status == 0, "\(result.stderr)")
        let files = try #require((try result.json() as? [String: Any])?["files"] as? [[String: Any]])
        #expect(files.count == 2)
        for (input, file) in zip(Self.executables, files) {
            let sites = Self.sites(file)
            #expect(sites.count == 34)
            #expect(sites.filter { $0["mnemonic"] as? String == "movnti" }.count == 32)
            #expect(sites.filter { $0["mnemonic"] as? String == "prefetchnta" }.count == 2)
            #expect(sites.allSatisfy { $0["outcome"] as? String == "rewritten" && $0["rule"] is NSNull })
            #expect(file["findings_after"] as? Int == 0 && file["accepted"] as? Bool == true)
            let output = try #require(file["output"] as? String)
            #expect(output == out + "/" + URL(fileURLWithPath: input).lastPathComponent)
            let before = [UInt8](try Data(contentsOf: URL(fileURLWithPath: input)))
            let after = [UInt8](try Data(contentsOf: URL(fileURLWithPath: output)))
            #expect(before.count == after.count)
            var allowed = Set<Int>()
            for site in sites {
                let start = site["file_offset"] as! Int, old = site["old"] as! String, new = site["new"] as! String
                #expect(old.count == new.count, "same length at \(start)")
                allowed.formUnion(start..<start + old.count / 2)
                #expect(Array(before[start..<start + old.count / 2]) == Self.bytes(old), "old bytes are the input's")
                #expect(Array(after[start..<start + new.count / 2]) == Self.bytes(new), "new bytes are the output's")
            }
            let changed = zip(before, after).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset)
            #expect(!changed.isEmpty && changed.allSatisfy(allowed.contains), "only the sites' bytes change")
            // movnti with an index keeps its start (mov first: it stays right after its restriction).
            let indexed = sites.first { ($0["old"] as! String).hasPrefix("490fc3443f") }
            #expect(indexed?["new"] as? String == "4989443f" + String((indexed?["old"] as! String).dropFirst(10)) + "90")
            let verify = try Sieve.run("verify", "-p", Sieve.packageRoot.path + "/policies/nacl-2015.yaml", output)
            #expect(verify.status == 0, "\(verify.stdout)")
        }
    }

    static func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = [], chars = Array(hex)
        while chars.count >= 2 { out.append(UInt8(String(chars[0...1]), radix: 16)!); chars.removeFirst(2) }
        return out
    }

    /// A policy's `rewrite` overrides the database and is reported with its file, line, reason and refs.
    @Test func policyRewriteRuleDecidesAndIsReported() throws {
        let dir = try Self.scratch()
        try FileManager.default.copyItem(atPath: Sieve.packageRoot.path + "/policies/nacl-2015.yaml", toPath: dir + "/nacl-2015.yaml")
        try """
        sieve: 1
        name: nops for movnti
        extends: nacl-2015
        rewrite:
          - mnemonic: movnti
            to: nop
            reason: our stores need no ordering against the hint
            refs: [LAB-7]
        """.write(toFile: dir + "/p.yaml", atomically: true, encoding: .utf8)
        let result = try Sieve.run(["patch", "-p", dir + "/p.yaml", Self.executables[1], "-o", dir + "/out.nexe", "--format", "json"])
        #expect(result.status == 0, "\(result.stderr)")
        let file = try #require(((try result.json() as? [String: Any])?["files"] as? [[String: Any]])?.first)
        let movnti = Self.sites(file).filter { $0["mnemonic"] as? String == "movnti" }
        #expect(movnti.count == 32)
        for site in movnti {
            #expect((site["new"] as! String).allSatisfy { $0 == "9" || $0 == "0" }, "NOPs only")
            let rule = try #require(site["rule"] as? [String: Any])
            #expect(rule["line"] as? Int == 5 && rule["reason"] as? String == "our stores need no ordering against the hint")
            #expect(rule["refs"] as? [String] == ["LAB-7"] && (rule["file"] as? String)?.hasSuffix("p.yaml") == true)
        }
        let text = try Sieve.run(["patch", "-p", dir + "/p.yaml", Self.executables[1], "-o", dir + "/out2.nexe"])
        #expect(text.stdout.contains("movnti -> nop x5 (rewrite at \(dir)/p.yaml:5: our stores need no ordering against the hint [LAB-7])"))
    }

    /// Nothing accepted replaces RDTSC: left (exit 1, the output written so that `verify` can show
    /// it), or stubbed with HLT when asked (exit 0).
    @Test func hltStubsOnlyWhenAsked() throws {
        let dir = try Self.scratch()
        try FileManager.default.copyItem(atPath: Sieve.packageRoot.path + "/policies/nacl-2015.yaml", toPath: dir + "/nacl-2015.yaml")
        try "sieve: 1\nname: no rdtsc\nextends: nacl-2015\nban:\n  - {mnemonic: rdtsc, reason: timer}\n"
            .write(toFile: dir + "/p.yaml", atomically: true, encoding: .utf8)
        let code = try Sieve.temporaryFile([0x0F, 0x31] + [UInt8](repeating: 0x90, count: 30) + [0x89, 0xC0] + [UInt8](repeating: 0x90, count: 30))
        let left = try Sieve.run(["patch", "-p", dir + "/p.yaml", "--raw", "--base", "0x10000", code, "-o", dir + "/left.bin", "--format", "json"])
        #expect(left.status == 1)
        let leftSite = try #require(Self.sites(((try left.json() as? [String: Any])?["files"] as? [[String: Any]])![0]).first)
        #expect(leftSite["outcome"] as? String == "left" && leftSite["new"] as? String == "0f31" && leftSite["address"] as? Int == 0x10000)
        #expect(FileManager.default.contentsEqual(atPath: code, andPath: dir + "/left.bin"))
        let stubbed = try Sieve.run(["patch", "-p", dir + "/p.yaml", "--raw", code, "-o", dir + "/hlt.bin", "--stub-with-hlt"])
        #expect(stubbed.status == 0, "\(stubbed.stdout)\(stubbed.stderr)")
        #expect(stubbed.stdout.contains("rdtsc -> hlt x2 (--stub-with-hlt: no accepted replacement)"))
        let out = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/hlt.bin")))
        #expect(Array(out.prefix(2)) == [0xF4, 0xF4] && out.count == 64)
    }

    /// A `rewrite` is checked like any rule: a reason is required, `to` must name something, and
    /// instance fields are refused, each at its file:line:col.
    @Test(arguments: [
        ("  - {mnemonic: movnti, to: nop}\n", "p.yaml:5:5: error: a rewrite needs a 'reason'"),
        ("  - {mnemonic: movnti, to: movv, reason: x}\n", "p.yaml:5:28: error: 'to' is nop, a form id or a mnemonic, not 'movv'"),
        ("  - {mnemonic: movnti, operands: memory, to: nop, reason: x}\n", "p.yaml:5:24: error: a rewrite names whole forms"),
        ("  - {mnemonic: movnti, reason: x}\n", "p.yaml:5:5: error: a rewrite needs 'to'"),
    ])
    func rewriteRulesAreChecked(entry: String, error: String) throws {
        let dir = try Self.scratch()
        try FileManager.default.copyItem(atPath: Sieve.packageRoot.path + "/policies/nacl-2015.yaml", toPath: dir + "/nacl-2015.yaml")
        try ("sieve: 1\nname: p\nextends: nacl-2015\nrewrite:\n" + entry).write(toFile: dir + "/p.yaml", atomically: true, encoding: .utf8)
        let result = try Sieve.run(["patch", "-p", dir + "/p.yaml", Self.executables[1], "-o", dir + "/out"])
        #expect(result.status == 2)
        #expect(result.stderr.contains(error), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
    }

    /// A damaged input or an unwritable output is an error (exit 2) at `sieve: error:`, and no
    /// output is written: the other inputs' outputs wait for all of them.
    @Test func damagedInputsAndUnwritableOutputsFailClosed() throws {
        let dir = try Self.scratch()
        let truncated = dir + "/truncated.nexe"
        try Data(try Data(contentsOf: URL(fileURLWithPath: Self.executables[1])).prefix(100)).write(to: URL(fileURLWithPath: truncated))
        let policy = Sieve.packageRoot.path + "/policies/nacl-2015.yaml"
        let damaged = try Sieve.run(["patch", "-p", policy, Self.executables[0], truncated, "-o", dir + "/out"])
        #expect(damaged.status == 2 && damaged.stderr.hasPrefix("sieve: error: " + truncated))
        #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
        let unwritable = try Sieve.run(["patch", "-p", policy, Self.executables[1], "-o", dir + "/missing/dir/x.nexe"])
        #expect(unwritable.status == 2 && unwritable.stderr.contains("sieve: error: cannot write"))
    }

    /// Several inputs with one name would overwrite each other's output: a usage error, nothing written.
    @Test func collidingOutputsAreRefused() throws {
        let dir = try Self.scratch()
        let a = dir + "/a", b = dir + "/b"
        for d in [a, b] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: Self.executables[1], toPath: d + "/x.nexe")
        }
        let result = try Sieve.run(["patch", "-p", Sieve.packageRoot.path + "/policies/nacl-2015.yaml", a + "/x.nexe", b + "/x.nexe", "-o", dir + "/out"])
        #expect(result.status == 2 && result.stderr.contains("two inputs are named x.nexe"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
    }
}
