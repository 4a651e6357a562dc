import Foundation
import Testing

extension HostileInputTests {
    /// A policy's text reached the terminal raw: `\e[2J` in a reason cleared the screen.
    @Suite struct ControlCharacters {
        @Test func aReasonCannotDriveTheTerminal() throws {
            let standard = Sieve.packageRoot.appendingPathComponent("policies/standard.yaml").path
            let policy = try PolicyCommandTests.temporaryPolicy("""
                sieve: 1
                name: "hostile\\e]0;title\\a"
                extends: \(standard)
                ban:
                  - mnemonic: clflush
                    reason: "clears \\e[2J the screen, \\u202Ereversed\\u202C, \\x9b and \\x7f"
                    refs: ["CVE-\\e[31m"]
                """)
            defer { try? FileManager.default.removeItem(atPath: policy) }
            for arguments in [["explain", "-p", policy, "clflush_m8"], ["explain", "-p", policy, "0f ae 3c 24"], ["check", policy]] {
                let result = try Sieve.run(arguments)
                let raw = Array(result.stdout.unicodeScalars) + Array(result.stderr.unicodeScalars)
                #expect(!raw.contains { $0.value < 0x20 && $0 != "\n" && $0 != "\t" || (0x7f...0x9f).contains($0.value) || $0.value == 0x202e },
                        "\(arguments): \(result.stdout.debugDescription)")
                #expect(result.status != 2, "\(result.stderr)")
            }
            let explain = try Sieve.run("explain", "-p", policy, "clflush_m8")
            #expect(explain.stdout.contains("clears \\x1b[2J the screen, \\u{202e}reversed\\u{202c}, \\u{9b} and \\x7f"))
            // JSON keeps the text, escaped as JSON.
            let json = try #require(try Sieve.run("explain", "-p", policy, "clflush_m8", "--format", "json").json() as? [String: Any])
            let rule = try #require((json["forms"] as? [[String: Any]])?.first?["rule"] as? [String: Any])
            #expect(rule["reason"] as? String == "clears \u{1b}[2J the screen, \u{202e}reversed\u{202c}, \u{9b} and \u{7f}")
        }
    }
}
