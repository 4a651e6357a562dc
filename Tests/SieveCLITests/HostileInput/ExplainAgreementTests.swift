import Foundation
import Testing

extension HostileInputTests {
    /// `explain` once said "accepted" for bytes `verify` refuses by a model rule (`c3`, `c9`,
    /// `64 48 8b 00` under nacl.yaml). Now it runs the same core on the same bytes.
    @Suite struct ExplainAgreesWithVerify {
        static func policy(_ name: String) -> String { Sieve.packageRoot.appendingPathComponent("policies/" + name).path }

        static func verify(_ hex: String, _ policy: String) throws -> Int32 {
            let bytes = hex.split(separator: " ").map { UInt8($0, radix: 16)! }
            let file = try Sieve.temporaryFile(bytes)
            defer { try? FileManager.default.removeItem(atPath: file) }
            return try Sieve.run("verify", "-p", policy, "--raw", file).status
        }

        @Test(arguments: ["nacl.yaml", "standard.yaml"], ["c3", "c9", "64 48 8b 00", "48 89 c4", "0f ae 38", "eb ff"])
        func aModelRefusalIsNamed(_ profile: String, _ hex: String) throws {
            let explain = try Sieve.run("explain", "-p", Self.policy(profile), hex, "--format", "json")
            #expect(explain.status == 1, "\(explain.stdout)")
            let json = try #require(try explain.json() as? [String: Any])
            #expect(json["accepted"] as? Bool == false)
            #expect(try Self.verify(hex, Self.policy(profile)) == 1)
            if json["policy_accepts"] as? Bool == true {
                let model = try #require(json["model"] as? [[String: Any]])
                #expect(model.contains { $0["needs_surrounding_code"] as? Bool == false }, "the model rule is named")
                let text = try Sieve.run("explain", "-p", Self.policy(profile), hex)
                #expect(text.stdout.contains("refused by the sandbox model"))
            }
        }

        /// What needs surrounding code is said to need it, with code that makes it acceptable;
        /// what is accepted alone is what verify accepts alone.
        @Test(arguments: ["ff e0", "f3 a4", "89 c4", "41 8b 04 07", "49 8b 04 27", "90", "e9 00 00 00 00"])
        func layoutRulesNeedTheCodeAround(_ hex: String) throws {
            let explain = try Sieve.run("explain", "-p", Self.policy("standard.yaml"), hex, "--format", "json")
            #expect(explain.status == 0, "\(explain.stdout)")
            let json = try #require(try explain.json() as? [String: Any])
            let alone = try #require(json["accepted_alone"] as? Bool)
            #expect(try Self.verify(hex, Self.policy("standard.yaml")) == (alone ? 0 : 1))
            let model = try #require(json["model"] as? [[String: Any]])
            #expect(model.allSatisfy { $0["needs_surrounding_code"] as? Bool == true })
            #expect(alone == model.filter { $0["warning"] as? Bool == false }.isEmpty)
            if !alone {
                #expect(json["context"] is [String: Any])
                #expect(try Sieve.run("explain", "-p", Self.policy("standard.yaml"), hex).stdout.contains("needs the code around it"))
            }
        }
    }

    @Suite struct Version {
        /// `--version` names the release, the database and the core, and the core is the one
        /// `generate` writes.
        @Test func namesTheCoreThatGenerateWrites() throws {
            let version = try Sieve.run("--version")
            #expect(version.status == 0)
            #expect(version.lines.count == 3)
            #expect(version.lines[0].hasPrefix("sieve "))
            #expect(version.lines[1].hasPrefix("database iced-x86 "))
            let core = try #require(version.lines[2].split(separator: " ").last.map(String.init))
            #expect(core.count == 16)
            let out = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: out) }
            #expect(try Sieve.run("generate", "-p", ExplainAgreesWithVerify.policy("paranoid.yaml"), "-o", out).status == 0)
            let header = try String(contentsOfFile: out + "/sieve_verifier.h", encoding: .utf8)
            #expect(header.contains("#define SIEVE_CORE_HASH \"\(core)\""))
        }
    }
}
