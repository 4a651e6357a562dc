import Foundation
import Testing

/// `sieve bench`'s figures and `sieve verify --threads`: what they report, not how fast (speed is
/// measured by Scripts/bench-verifier, never asserted by a test).
@Suite struct SpeedCommandTests {
    static let fib = Sieve.corpus.appendingPathComponent("nacl/x64_fib_array_v2.nexe").path
    static let nacl = Sieve.packageRoot.appendingPathComponent("policies/nacl.yaml").path

    /// One run reports the C core on one thread and on all, Zydis on the same bytes, and the ratios
    /// between them (computed from the figures it prints), and checks the threads found the same.
    @Test func benchReportsCThreadsAndZydisInOneRun() throws {
        let result = try Sieve.run(["bench", "-p", Self.nacl, Self.fib, "--passes", "2", "--threads", "2", "--format", "json"])
        #expect(result.status == 0, "\(result.stderr)")
        let json = try #require(try result.json() as? [String: Any])
        let c = try #require(json["c"] as? [String: Any]), threads = try #require(json["c_threads"] as? [String: Any])
        let zydis = try #require(json["zydis"] as? [String: Any])
        let cRate = try #require(c["mib_per_s"] as? Double), threadRate = try #require(threads["mib_per_s"] as? Double)
        let zydisRate = try #require(zydis["mib_per_s"] as? Double)
        #expect(cRate > 0 && threadRate > 0 && zydisRate > 0)
        #expect(abs((c["over_zydis"] as? Double ?? 0) - cRate / zydisRate) < 0.01 * cRate / zydisRate)
        #expect(abs((threads["over_c"] as? Double ?? 0) - threadRate / cRate) < 0.01 * threadRate / cRate)
        #expect(threads["threads"] as? Int == 2 && (threads["pieces"] as? Int ?? 0) > 1 && threads["same_findings"] as? Bool == true)
        #expect(json["bytes"] as? Int == 203072 && json["accepted"] as? Bool == true)
    }

    /// A large refused module (the executable's code repeated, then damaged): the same report on
    /// one thread and on four, byte for byte.
    @Test func verifyThreadsGivesTheSameReport() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.fib))
        var code = [UInt8](data[0x20000..<(0x20000 + 203072)])
        code = Array(Array(repeating: code, count: 4).joined())
        var state: UInt64 = 7
        for _ in 0..<300 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            code[Int(state >> 33) % code.count] = UInt8(truncatingIfNeeded: state >> 13)
        }
        let path = try Sieve.temporaryFile(code)
        var outputs: [String] = []
        for threads in ["1", "4"] {
            for format in ["text", "json"] {
                let result = try Sieve.run(["verify", "-p", Self.nacl, "--raw", "--base", "0x20000", path, "--threads", threads,
                                            "--format", format, "--max-findings", "100000"])
                #expect(result.status == 1, "\(result.stderr)")
                outputs.append(result.stdout)
            }
        }
        #expect(outputs[0].split(separator: "\n").count > 300, "findings listed")
        #expect(outputs[0] == outputs[2] && outputs[1] == outputs[3])
        let zero = try Sieve.run(["verify", "-p", Self.nacl, Self.fib, "--threads", "0"])
        #expect(zero.status == 2 && zero.stderr.contains("--threads must be at least 1"))
    }
}
