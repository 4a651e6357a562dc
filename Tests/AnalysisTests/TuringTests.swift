import Analysis
import Codegen
import Foundation
import Policy
import Testing
import Verifier
import X86

let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// Policies written for one test: a file in a fresh folder, loaded like any other.
enum TestPolicy {
    static func load(_ yaml: String) throws -> CompiledPolicy {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-turing-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("policy.yaml").path
        try ("sieve: 1\nname: test\nsandbox:\n  model: nacl-x86-64\n" + yaml).write(toFile: path, atomically: true, encoding: .utf8)
        return CompiledPolicy(try PolicyLoader.load(path))
    }

    static func shipped(_ name: String) throws -> CompiledPolicy { CompiledPolicy(try PolicyLoader.load(root + "/policies/" + name)) }

    /// Only the tape machine's capabilities: no JLE/JL/JS for SUBLEQ's test.
    static let tapeOnly = "allow:\n  - group: base\n    mnemonic: [mov, add, sub, cmp, test, xor, je, jne, jmp, nop]\n"
    /// MOV and JMP only: Dolan's machine.
    static let movAndJump = "allow:\n  - group: base\n    mnemonic: [mov, jmp]\n"
    /// Arithmetic on registers, conditional and unconditional jumps: a counter machine at most.
    static let registersOnly = """
        allow:
          - group: base
            mnemonic: [mov, add, sub, test, cmp, xor]
            operands: register
          - group: base
            mnemonic: [je, jne, jb, jae, jmp, nop]

        """
}

/// The generated C verifier's verdict on one piece of code: its number of findings.
enum CVerdict {
    static func findings(_ compiled: CompiledPolicy, _ code: [UInt8]) throws -> Int {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-cw-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, text) in try CVerifierGenerator(compiled).files() {
            try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        let main = """
            #include <stdio.h>
            #include "sieve_verifier.h"
            static unsigned char code[1 << 20];
            int main(int argc, char **argv) {
                FILE *f = fopen(argv[1], "rb");
                size_t n = f ? fread(code, 1, sizeof code, f) : 0;
                (void)argc;
                printf("%zu\\n", sieve_verify(code, n, 0, NULL, NULL));
                return 0;
            }
            """
        try main.write(to: dir.appendingPathComponent("main.c"), atomically: true, encoding: .utf8)
        try Data(code).write(to: dir.appendingPathComponent("code.bin"))
        let binary = dir.appendingPathComponent("verify").path
        _ = try run("/usr/bin/cc", ["-std=c99", "-O1", "-o", binary, dir.appendingPathComponent("main.c").path,
                                    dir.appendingPathComponent("sieve_verifier.c").path])
        let out = try run(binary, [dir.appendingPathComponent("code.bin").path])
        return Int(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    static func run(_ tool: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}

/// Every witness that runs is first accepted by the policy's verifier, in both engines.
func acceptedByBothEngines(_ compiled: CompiledPolicy, _ witness: Witness) throws {
    #expect(Verifier(compiled).verify(witness.code, base: 0).findings.isEmpty)
    #expect(try CVerdict.findings(compiled, witness.code) == 0, "the generated C verifier accepts the witness")
}

func witness(_ compiled: CompiledPolicy, _ attempt: TuringChecker.Attempt) -> Witness? {
    if case .witness(let w) = attempt { return w }
    Issue.record("no witness: \(attempt)")
    return nil
}

@Suite struct WitnessExecutionTests {
    @Test func subleqInterpreterMultipliesAndComputesFibonacci() throws {
        let compiled = try TestPolicy.shipped("paranoid.yaml")
        let report = TuringChecker(compiled).check()
        #expect(report.verdict == .turingComplete && report.model == .subleq)
        let w = try #require(report.witness)
        try acceptedByBothEngines(compiled, w)

        let product = NativeRun.run(w.code, data: Subleq.image(Subleq.multiplyExample))
        #expect(product.ending == .returned)
        #expect(product.word64(13) == 12)
        #expect(Reference.subleq(Subleq.multiplyExample)[13] == 12)

        for n: Int64 in [20, 50] {
            let (program, result) = SubleqAssembler.fibonacci(n)
            let run = NativeRun.run(w.code, data: Subleq.image(program))
            let reference = Reference.subleq(program)
            #expect(run.ending == .returned)
            #expect(run.word64(result) == reference[result])
            #expect((0..<program.count).map(run.word64) == reference, "the whole memory matches the reference")
        }
        #expect(Reference.subleq(SubleqAssembler.fibonacci(20).words)[SubleqAssembler.fibonacci(20).result] == 6765)
    }

    @Test func tapeMachineMultiplies() throws {
        let compiled = try TestPolicy.load(TestPolicy.tapeOnly)
        let report = TuringChecker(compiled).check()
        #expect(report.verdict == .turingComplete && report.model == .tape, "SUBLEQ lacks its branch: the tape machine is next")
        let checker = TuringChecker(compiled)
        for (source, tape) in [(TapeMachine.multiply, [UInt32]([3, 4, 0, 0])), (TapeMachine.multiply, [7, 9, 0, 0]),
                               ("[->+<]>[->>+<<]", [5, 6, 0, 0]), ("++[>+++[>++<-]<-]", [0, 0, 0])] {
            let w = try #require(witness(compiled, checker.attemptTape(source)))
            try acceptedByBothEngines(compiled, w)
            let run = NativeRun.run(w.code, data: TapeMachine.image(tape))
            let reference = Reference.tape(source, tape)
            #expect(run.ending == .returned)
            #expect((0..<8).map { run.word32(at: 4 * $0) } == Array(reference.prefix(8)), "\(source) on \(tape)")
        }
        #expect(Reference.tape(TapeMachine.multiply, [3, 4, 0, 0])[2] == 12)
    }

    @Test func movOnlyTableMachineRunsTheBusyBeaver() throws {
        let compiled = try TestPolicy.load(TestPolicy.movAndJump)
        let report = TuringChecker(compiled).check()
        #expect(report.verdict == .turingComplete && report.model == .movTable)
        let w = try #require(report.witness)
        #expect(w.forms.allSatisfy { $0.hasPrefix("mov_") || $0.hasPrefix("jmp_") }, "\(w.forms)")
        try acceptedByBothEngines(compiled, w)

        let cells = MovTableMachine.tapeCells, head = cells / 2
        let blank = [UInt32](repeating: 0, count: cells)
        let run = NativeRun.run(w.code, data: MovTableMachine.image(.busyBeaver4, tape: blank, head: head))
        #expect(run.ending == .faulted(SIGSEGV), "the halting record's probe faults")
        let tape = run.memory.withUnsafeBytes { MovTableMachine.tape(in: $0) }
        let reference = Reference.turing(.busyBeaver4, tape: blank, head: head)
        #expect(reference.steps == 107 && reference.tape.filter { $0 == 1 }.count == 13)
        #expect(tape == reference.tape)

        // Unary addition: 111 0 1111 -> 1111111.
        let add = TuringMachine(rules: [
            [.init(write: 1, move: .right, next: 1), .init(write: 1, move: .right, next: 0)],  // skip the first number, fill the gap
            [.init(write: 0, move: .left, next: 2), .init(write: 1, move: .right, next: 1)],   // to the end of the second
            [.init(write: 0, move: .left, next: 3), .init(write: 0, move: .left, next: 3)],    // erase one 1
            [.init(write: 0, move: .right, next: 4), .init(write: 1, move: .left, next: 3)],   // back to the start, halt
        ])
        var input = blank
        for k in [0, 1, 2, 4, 5, 6, 7] { input[head + k] = 1 }
        let sum = NativeRun.run(w.code, data: MovTableMachine.image(add, tape: input, head: head))
        let sumTape = sum.memory.withUnsafeBytes { MovTableMachine.tape(in: $0) }
        #expect(sumTape == Reference.turing(add, tape: input, head: head).tape)
        #expect(sumTape.filter { $0 == 1 }.count == 7)
    }

    @Test func counterMachineMultipliesInRegisters() throws {
        let compiled = try TestPolicy.load(TestPolicy.registersOnly)
        let report = TuringChecker(compiled).check()
        #expect(report.verdict == .weak && report.model == .minsky)
        let checker = TuringChecker(compiled)
        for (a, b) in [(3, 4), (5, 7), (0, 9), (12, 1)] as [(UInt32, UInt32)] {
            let w = try #require(witness(compiled, checker.attemptMinsky(.multiply, inputs: [a, b, 0, 0])))
            try acceptedByBothEngines(compiled, w)
            let run = NativeRun.run(w.code, data: [])
            #expect(run.ending == .returned)
            let reference = Reference.counters(.multiply, [UInt64(a), UInt64(b), 0, 0])
            #expect(Array(run.registers.prefix(4)) == reference)
            #expect(run.registers[2] == UInt64(a * b))
        }
    }
}

@Suite struct TuringVerdictTests {
    @Test(arguments: ["nacl.yaml", "nacl-2015.yaml", "standard.yaml", "hardened.yaml", "paranoid.yaml", "minimal.yaml"])
    func shippedProfilesAreTuringComplete(_ name: String) throws {
        let compiled = try TestPolicy.shipped(name)
        let report = TuringChecker(compiled).check()
        #expect(report.verdict == .turingComplete)
        let w = try #require(report.witness)
        #expect(Verifier(compiled).verify(w.code, base: 0).findings.isEmpty)
        #expect(w.code.count % compiled.bundleSize == 0)
    }

    @Test func everyErratumOverlayKeepsAWitness() throws {
        let overlays = try FileManager.default.contentsOfDirectory(atPath: root + "/policies/errata").filter { $0.hasSuffix(".yaml") }
        #expect(overlays.count >= 10)
        for name in overlays {
            let report = TuringChecker(try TestPolicy.shipped("errata/" + name)).check()
            #expect(report.verdict == .turingComplete, "\(name)")
        }
    }

    @Test func noBackwardTransferIsNotTuringComplete() throws {
        let report = TuringChecker(try TestPolicy.load("allow:\n  - group: base\n    mnemonic: [mov, add, sub, cmp, xor, and, or, nop]\n")).check()
        #expect(report.verdict == .notTuringComplete)
        #expect(report.lemma?.hasPrefix("NL1") == true)
        #expect(report.missing.contains("backward jump"))
    }

    @Test func movWithoutAJumpNeedsAJump() throws {
        let report = TuringChecker(try TestPolicy.load("allow:\n  - group: base\n    mnemonic: [mov]\n")).check()
        #expect(report.verdict == .notTuringComplete)
        #expect(report.lemma?.hasPrefix("NL1") == true)
        #expect(report.repair.map(\.id) == ["jmp_rel32_64"], "the repair is one form: \(report.repair.map(\.id))")
    }

    @Test func registerArithmeticWithBranchesIsWeak() throws {
        let report = TuringChecker(try TestPolicy.load(TestPolicy.registersOnly)).check()
        #expect(report.verdict == .weak)
        #expect(report.lemma?.hasPrefix("NL2") == true)
        #expect(!report.repair.isEmpty, "it names the forms a strong witness needs")
    }

    @Test func loadsWithoutStoresAreWeak() throws {
        let report = TuringChecker(try TestPolicy.load(TestPolicy.registersOnly + """
              - form: [mov_r64_rm64, mov_r32_rm32]

            """)).check()
        #expect(report.verdict == .weak)
        #expect(report.lemma?.hasPrefix("NL2") == true)
    }

    @Test func theStackAsTheOnlyMemoryIsWeak() throws {
        let report = TuringChecker(try TestPolicy.load(TestPolicy.registersOnly + """
              - group: base
                mnemonic: [push, pop]
                operands: register

            """)).check()
        #expect(report.verdict == .weak)
        #expect(report.lemma?.hasPrefix("NL3") == true, "\(report.lemma ?? "-")")
    }

    @Test func anUncataloguedRouteIsUnknown() throws {
        let report = TuringChecker(try TestPolicy.load("allow:\n  - group: base\n    mnemonic: [xadd, jmp, nop]\n")).check()
        #expect(report.verdict == .unknown)
        #expect(!report.missing.isEmpty && !report.repair.isEmpty)
    }

    /// The repair is a promise: trusting exactly those forms gives a witness.
    @Test(arguments: ["allow:\n  - group: base\n    mnemonic: [mov]\n",
                      "allow:\n  - group: base\n    mnemonic: [mov, add, sub, cmp, xor, and, or, nop]\n",
                      TestPolicy.registersOnly, "allow:\n  - group: base\n    mnemonic: [xadd, jmp, nop]\n"])
    func trustingTheRepairGivesAWitness(_ policy: String) throws {
        let report = TuringChecker(try TestPolicy.load(policy)).check()
        #expect(report.verdict != .turingComplete && !report.repair.isEmpty)
        let repaired = policy + "  - form: [\(report.repair.map(\.id).joined(separator: ", "))]\n"
        #expect(TuringChecker(try TestPolicy.load(repaired)).check().verdict == .turingComplete, "\(report.repair.map(\.id))")
    }

    @Test func aMissingRestrictionIsNamed() throws {
        // Indexed loads and stores, but no zero-extending 32-bit write to restrict an index with.
        let report = TuringChecker(try TestPolicy.load("""
            allow:
              - group: base
                mnemonic: [mov, jmp, nop]
                operand-size: 64

            """)).check()
        #expect(report.verdict != .turingComplete)
        #expect(report.missing.contains("index restriction"), "\(report.missing)")
    }

    @Test func witnessesAreDeterministic() throws {
        let compiled = try TestPolicy.shipped("standard.yaml")
        let a = try #require(TuringChecker(compiled).check().witness), b = try #require(TuringChecker(compiled).check().witness)
        #expect(a.code == b.code && a.listing == b.listing)
    }
}
