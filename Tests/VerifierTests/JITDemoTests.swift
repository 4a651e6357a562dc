@testable import Codegen
import Foundation
import Testing
@testable import Policy
@testable import Verifier

#if os(Linux) && arch(x86_64)
private let nativeJIT = true
#else
private let nativeJIT = false
#endif

/// A tiny JIT (Fixtures/jit_demo.c) over the C verifier `sieve generate` writes for nacl-2015: a %r15 sandbox whose
/// code region is a memfd mapped twice (executable in the sandbox, writable outside it), pages made executable only
/// once `sieve_verify_region` accepts them, a thread running the JIT'd loop while the immediate it stores is replaced
/// (`sieve_validate_replacement`, then `sieve_copy_code` with a membarrier serializer), refused pages and
/// replacements, and a fault handler that ends the process when a page that is not verified code runs.
@Suite(.enabled(if: nativeJIT, "x86-64 Linux only: the demo runs NaCl code natively"), .serialized)
struct JITDemoTests {
    struct Run {
        var status: Int32
        var exited: Bool
        var timedOut: Bool
        var output: String
        var lines: [String] { output.split(separator: "\n").map(String.init) }
        func line(_ prefix: String) -> String? { lines.first { $0.hasPrefix(prefix) } }
    }

    /// The demo, compiled once with the generated verifier; the error of that, if any.
    static let binary = Result<String, any Error> { try build() }

    static func build() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-jit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, text) in try CVerifierGenerator(CompiledPolicy(try Repository.policy("nacl-2015.yaml"))).files() {
            try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        let binary = dir.appendingPathComponent("jit_demo").path
        try Assembler.run("/usr/bin/cc", ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-I", dir.path,
                                         "-o", binary, Repository.root + "/Tests/VerifierTests/Fixtures/jit_demo.c",
                                         dir.appendingPathComponent("sieve_verifier.c").path])
        return binary
    }

    /// Runs the demo with its standard output in a file (no pipe to fill), terminated after `seconds`.
    static func run(_ arguments: [String] = [], seconds: Double = 20) throws -> Run {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-jit-out-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: out) }
        let handle = try FileHandle(forWritingTo: out)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try binary.get())
        process.arguments = arguments
        process.standardOutput = handle
        try process.run()
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(2000) }
        let timedOut = process.isRunning
        if timedOut { process.terminate() }
        process.waitUntilExit()
        try handle.close()
        return Run(status: process.terminationStatus, exited: process.terminationReason == .exit, timedOut: timedOut,
                   output: String(decoding: try Data(contentsOf: out), as: UTF8.self))
    }

    @Test func verifiedPagesRunAndALiveImmediateIsReplaced() throws {
        let run = try Self.run()
        let report = run.output
        #expect(!run.timedOut, "the demo ran past 20 s:\n\(report)")
        #expect(run.exited && run.status == 0, "status \(run.status):\n\(report)")
        #expect(!run.lines.contains { $0.hasPrefix("FAIL") || $0.hasPrefix("FATAL") }, "\(report)")

        // Pages turn executable only once verified; the escape and a second verification are refused.
        #expect(run.line("page 0: verified, mapped executable") != nil, "\(report)")
        #expect(run.line("page 1: verified, mapped executable") != nil, "\(report)")
        let bad = run.line("bad page 2: refused (") ?? ""
        #expect(bad.contains("unsafe-memory-operand") && bad.contains("reserved-register-write") && bad.hasSuffix("left unmapped"),
                "\(report)")
        #expect(run.line("page 0 again: refused (1 finding: layout)") != nil, "\(report)")

        // Invalid replacements are refused; the valid one is copied in while the loop runs, and its value is stored.
        #expect(run.line("invalid replacement (opcode b8 -> b9, mov to %ecx): refused (1 finding: replacement)") != nil, "\(report)")
        #expect(run.line("invalid replacement (jmp retargeted into the middle of an instruction): refused (") != nil, "\(report)")
        #expect(run.line("invalid replacement (addq immediate 1 -> 2, not a modifiable form): refused (") != nil, "\(report)")
        #expect(run.line("serializer: ") != nil, "\(report)")
        #expect(run.line("sandbox thread: running page 0, storing 0x11111111") != nil, "\(report)")
        #expect(run.line("replacement validated, copied: 1 instruction changed") != nil, "\(report)")
        #expect(run.line("patched immediate 0x11111111 -> 0x22222222: new value seen after ") != nil, "\(report)")
        #expect(run.line("stress: 1000 more replacements while the loop ran, no torn instruction, last value seen") != nil,
                "\(report)")

        // The loop leaves through the masked jump and the trampoline; nothing is writable and executable.
        #expect(run.line("sandbox thread: left through the trampoline after ") != nil, "\(report)")
        #expect(run.line("W^X held: no mapping writable and executable; executable code pages = verified pages (2 of 16)") != nil,
                "\(report)")
        #expect(run.lines.last == "all checks held", "\(report)")
    }

    /// The fault handler is not a guard that never fires: the loop jumps into a page the verifier refused, the fetch
    /// faults, and the handler ends the process with status 3.
    @Test func aRefusedPageNeverRuns() throws {
        let run = try Self.run(["--run-refused"])
        let report = run.output
        #expect(!run.timedOut, "the demo ran past 20 s:\n\(report)")
        #expect(run.exited && run.status == 3, "status \(run.status):\n\(report)")
        #expect(run.line("page 0: verified, mapped executable") != nil, "\(report)")
        #expect(run.line("page 1: refused (2 findings: unsafe-memory-operand, reserved-register-write), left unmapped") != nil,
                "\(report)")
        #expect(run.line("FATAL: code ran from page 0x0000000000000001 of the code region (rip r15+0x0000000000021000), "
                         + "which is not verified code") != nil, "\(report)")
        #expect(run.line("all checks held") == nil, "\(report)")
    }
}
