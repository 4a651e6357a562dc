import Foundation
import Testing
@testable import Policy

/// Broken policies: each must fail to load with an error at a `file:line:col`, and none may
/// crash or hang. Every case is a folder of files; `main.yaml` is loaded.
@Suite struct MalformedPolicyTests {
    struct Case: Sendable, CustomStringConvertible {
        let name: String
        let files: [String: [UInt8]]
        /// A fragment the first error's message must contain.
        let message: String
        var description: String { name }

        init(_ name: String, _ main: String, _ message: String, others: [String: String] = [:]) {
            self.name = name
            self.files = others.mapValues { Array($0.utf8) }.merging(["main.yaml": Array(main.utf8)]) { $1 }
            self.message = message
        }

        init(_ name: String, bytes: [UInt8], _ message: String) {
            self.name = name
            self.files = ["main.yaml": bytes]
            self.message = message
        }
    }

    static let head = "sieve: 1\nname: t\n"

    static let cases: [Case] = [
        Case("empty file", "", "a policy is a YAML mapping"),
        Case("only a comment", "# nothing\n", "a policy is a YAML mapping"),
        Case("unclosed flow list", head + "trust: [base\n", "YAML"),
        Case("bad indentation", "sieve: 1\n name: t\n  trust: x\n", "YAML"),
        Case("tab indentation", "sieve: 1\nban:\n\t- mnemonic: x\n", "YAML"),
        Case("scalar document", "hello\n", "a policy is a YAML mapping"),
        Case("list document", "- base\n", "a policy is a YAML mapping"),
        Case("name is a list", "sieve: 1\nname: [a, b]\n", "'name' takes a text value"),
        Case("schema 2", "sieve: 2\nname: t\n", "unsupported schema version"),
        Case("missing schema", "name: t\ntrust: [base]\n", "missing 'sieve: 1'"),
        Case("missing name", "sieve: 1\ntrust: [base]\n", "missing 'name'"),
        Case("unknown key", head + "bann: []\n", "unknown key 'bann'"),
        Case("unknown sandbox key", head + "sandbox: {modle: none}\n", "unknown sandbox key"),
        Case("unknown model", head + "sandbox: {model: lfi}\n", "unknown sandbox model"),
        Case("bad bundle size", head + "sandbox: {bundle-size: 33}\n", "bundle-size"),
        Case("sandbox is a list", head + "sandbox: [none]\n", "'sandbox' is a mapping"),
        Case("trust is a mapping", head + "trust: {base: yes}\n", "'trust' is a list"),
        Case("unknown trusted group", head + "trust: [bsae]\n", "unknown group 'bsae'"),
        Case("ban entry is text", head + "ban: [clflush]\n", "a selector is a mapping"),
        Case("unknown selector field", head + "ban: [{mnemonc: clflush, reason: r}]\n", "unknown selector field 'mnemonc'"),
        Case("unknown mnemonic", head + "ban: [{mnemonic: clflsh, reason: r}]\n", "unknown mnemonic 'clflsh'"),
        Case("unknown extension", head + "ban: [{extension: sse5, reason: r}]\n", "unknown extension"),
        Case("unknown class", head + "ban: [{class: temporal, reason: r}]\n", "unknown class"),
        Case("bad operands", head + "ban: [{mnemonic: xchg, operands: mem, reason: r}]\n", "operands is"),
        Case("bad operand size", head + "ban: [{mnemonic: add, operand-size: 24, reason: r}]\n", "operand-size"),
        Case("bad vector length", head + "ban: [{extension: avx, vector-length: 64, reason: r}]\n", "vector-length"),
        Case("unknown register", head + "ban: [{register: eaxx, reason: r}]\n", "unknown register"),
        Case("unknown prefix", head + "ban: [{mnemonic: movsb, prefix: rex.q, reason: r}]\n", "unknown prefix"),
        Case("empty selector", head + "ban: [{reason: r}]\n", "an empty selector"),
        Case("selector matches nothing", head + "ban: [{mnemonic: cmpxchg8b, operands: register, reason: r}]\n", "matches no instruction"),
        Case("unknown form", head + "ban: [{form: clflush_m9, reason: r}]\n", "unknown form"),
        Case("unknown op-code string", head + "ban: [{opcode: 0F AE /9, reason: r}]\n", "op-code string"),
        Case("missing extends target", head + "extends: nowhere\n", "cannot read"),
        Case("extends cycle", head + "extends: other\n", "cycle", others: ["other.yaml": "sieve: 1\nname: o\nextends: main\n"]),
        Case("extends itself", head + "extends: main\n", "cycle"),
        Case("duplicate key", head + "name: again\n", "duplicate key 'name'"),
        Case("anchor", head + "groups:\n  g: &a [{mnemonic: add}]\n", "anchors are not allowed"),
        Case("alias", head + "groups:\n  g: [{mnemonic: add}]\nx: *a\n", "YAML"),
        Case("two documents", head + "---\nsieve: 1\n", "one YAML document"),
        Case("deep nesting", head + "ban: " + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "\n", "nested deeper"),
        Case("group cycle", head + "groups:\n  a: [{group: b}]\n  b: [{group: a}]\ntrust: [a]\n", "contains itself"),
        Case("group named like a built-in", head + "groups:\n  base: [{mnemonic: add}]\n", "built-in group"),
        Case("extension group in a list of lists", head + "trust: [[base]]\n", "not a list"),
        Case(("binary junk"), bytes: [0x7F, 0x45, 0x4C, 0x46, 0x02, 0x01, 0x01, 0x00, 0xFF, 0xFE, 0x00, 0x01, 0x80, 0x81], "YAML"),
        Case("invalid UTF-8", bytes: Array("sieve: 1\nname: ".utf8) + [0xC3, 0x28, 0x0A], "YAML"),
        Case("huge file", bytes: Array(("sieve: 1\nname: t\ndescription: " + String(repeating: "x", count: 1 << 20) + "\n").utf8), "at most"),
    ]

    @Test(arguments: cases)
    func failsWithAPosition(_ c: Case) throws {
        let dir = try Paths.folder(c.files)
        do {
            _ = try PolicyLoader.load(dir + "/main.yaml")
            Issue.record("\(c.name): loaded")
        } catch {
            let first = try #require(error.diagnostics.first { $0.severity == .error })
            #expect(first.message.contains(c.message), "\(c.name): \(first.message)")
            #expect(first.mark.line >= 1 && first.mark.column >= 1)
            let rendered = error.rendered()
            #expect(rendered.contains("\(first.file):\(first.mark.line):\(first.mark.column): error: "), "\(rendered)")
        }
    }

    @Test func atLeastThirtyCases() { #expect(Self.cases.count >= 30) }

    @Test func diagnosticsShowTheLineACaretAndAHint() throws {
        let dir = try Paths.folder(["main.yaml": Array("sieve: 1\nname: t\nban:\n  - {mnemonic: clflsh, reason: r}\n  - {extension: sse5, reason: r}\n".utf8)])
        do {
            _ = try PolicyLoader.load(dir + "/main.yaml")
            Issue.record("loaded")
        } catch {
            #expect(error.diagnostics.count == 2, "every error is collected")
            let text = error.rendered()
            #expect(text.contains("main.yaml:4:16: error: unknown mnemonic 'clflsh'"), "\(text)")
            #expect(text.contains("  - {mnemonic: clflsh, reason: r}\n" + String(repeating: " ", count: 17) + "^"), "\(text)")
            #expect(text.contains("hint: did you mean 'clflush'?"))
        }
    }

    /// Random mutations of a shipped profile: any verdict, but never a crash or a hang.
    @Test func mutatedProfilesNeverCrash() throws {
        let original = Array(try Data(contentsOf: URL(fileURLWithPath: Paths.policy("hardened.yaml"))))
        var state: UInt64 = 7
        func next() -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int(truncatingIfNeeded: state >> 33)
        }
        let dir = try Paths.folder(["standard.yaml": Array(try Data(contentsOf: URL(fileURLWithPath: Paths.policy("standard.yaml"))))])
        let alphabet = Array(":-[]{}&*!|>#'\" \n\tabc0123".utf8)
        for round in 0..<60 {
            var bytes = original
            for _ in 0..<(1 + next() % 4) {
                let at = next() % bytes.count
                switch next() % 3 {
                case 0: bytes[at] = alphabet[next() % alphabet.count]
                case 1: bytes.remove(at: at)
                default: bytes.insert(alphabet[next() % alphabet.count], at: at)
                }
            }
            let path = dir + "/m\(round).yaml"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do { _ = try PolicyLoader.load(path) } catch {
                #expect(!error.diagnostics.isEmpty)
            }
        }
    }
}
