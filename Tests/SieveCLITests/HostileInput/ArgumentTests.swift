import Foundation
import Testing

extension HostileInputTests {
    /// An option that would be silently ignored is a usage error.
    @Suite struct IgnoredOptions {
        @Test func disasmBaseWithoutRaw() throws {
            let file = Sieve.corpus.appendingPathComponent("nacl/x64_hello_world.nexe").path
            let result = try Sieve.run("disasm", "--base", "0x1000", file)
            #expect(result.status == 2)
            #expect(result.stderr.contains("--base applies to raw code"))
            #expect(result.stdout.isEmpty)
        }
    }
}

extension HostileInputTests {
    /// `ban --corpus` verified the corpus after writing and left damaged files out without a
    /// word: an impact report that says "nothing breaks" about files it could not read.
    @Suite struct BanCorpusFailsClosed {
        @Test func aDamagedCorpusFileStopsTheBanBeforeAnythingIsWritten() throws {
            let policy = try Sieve.copyOfProfile("nacl.yaml")
            let directory = (policy as NSString).deletingLastPathComponent
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let original = try Data(contentsOf: URL(fileURLWithPath: policy))
            let hello = try Data(contentsOf: Sieve.corpus.appendingPathComponent("nacl/x64_hello_world.nexe"))
            let truncated = directory + "/truncated.nexe"
            try hello.prefix(3000).write(to: URL(fileURLWithPath: truncated))
            let nacl = Sieve.corpus.appendingPathComponent("nacl").path

            let refused = try Sieve.run("ban", "class=non-temporal", "-p", policy, "--reason", "nt", "--corpus", nacl, "--corpus", truncated)
            #expect(refused.status == 2)
            #expect(refused.stderr.contains("truncated.nexe"))
            #expect(try Data(contentsOf: URL(fileURLWithPath: policy)) == original, "nothing written")

            let skipped = try Sieve.run("ban", "class=non-temporal", "-p", policy, "--reason", "nt", "--corpus", nacl,
                                        "--corpus", truncated, "--skip-damaged")
            #expect(skipped.status == 0, "\(skipped.stderr)")
            #expect(skipped.stderr.contains("skipped: \(truncated)"))
            #expect(skipped.stdout.contains("corpus: 2 files; 2 newly refused, 68 new sites"))
        }
    }
}
