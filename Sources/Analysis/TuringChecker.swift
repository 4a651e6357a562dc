import Policy
import Verifier
import X86

/// A witness: a universal machine as machine code made only of accepted forms, laid out to the
/// sandbox's rules and accepted by the policy's own verifier.
public struct Witness: Sendable {
    public let model: TuringModel
    /// Raw code, base 0, a whole number of bundles; halting jumps to its end.
    public let code: [UInt8]
    /// An annotated listing: offsets, bytes, instructions, what each one is for.
    public let listing: String
    /// The data at %r15 the witness expects.
    public let layout: String
    /// The distinct forms the witness uses, by database id, sorted.
    public let forms: [String]
}

/// `sieve check`'s answer to "does this subset still compute?" (DESIGN §10).
public struct TuringReport: Sendable {
    public enum Verdict: String, Sendable {
        case turingComplete = "turing-complete", weak, notTuringComplete = "not-turing-complete", unknown
    }

    public let verdict: Verdict
    /// The model of the witness (for `weak`, the counter machine).
    public let model: TuringModel?
    public let witness: Witness?
    /// For a verdict other than `turing-complete`: the capabilities the closest strong model lacks.
    public let missing: [String]
    /// Forms whose trust would give that model's witness: "allow `JMP rel32`".
    public let repair: [Form]
    /// The negative lemma that proves the verdict, when one does.
    public let lemma: String?
    /// Why each strong model was not used, in the order they were tried.
    public let attempts: [(model: TuringModel, problem: String)]
}

public struct TuringChecker {
    public let compiled: CompiledPolicy
    let verifier: Verifier
    let kit: Toolkit
    /// The accepted fillers, one per length: the same for every model.
    let fillers: [Encoded]

    public init(_ compiled: CompiledPolicy) {
        self.compiled = compiled
        verifier = Verifier(compiled)
        kit = Toolkit(verifier: verifier)
        fillers = kit.fillers()
    }

    /// The outcome of trying one model: a witness, or what it lacks.
    public enum Attempt {
        case witness(Witness)
        /// Capabilities no alternative provides, each with the forms its preferred alternative needs.
        case missing([(capability: String, forms: [Form])])
        /// The capabilities are there but the program did not pass layout or verification (fail closed).
        case failed(String)
    }

    /// Builds `model`'s default witness: SUBLEQ's and the mov-only machine's interpreters, the
    /// tape machine's multiplication, the counter machine's multiplication of 3 by 4.
    public func attempt(_ model: TuringModel) -> Attempt {
        switch model {
        case .tape: attemptTape(TapeMachine.multiply)
        case .minsky: attemptMinsky(.multiply, inputs: [3, 4])
        default: attempt(model) { builder in model == .subleq ? Subleq.build(builder) : MovTableMachine.build(builder) }
        }
    }

    public func attemptTape(_ source: String) -> Attempt { attempt(.tape) { TapeMachine.build($0, source: source) } }

    public func attemptMinsky(_ program: CounterProgram, inputs: [UInt32]) -> Attempt {
        attempt(.minsky) { MinskyMachine.build($0, program: program, inputs: inputs) }
    }

    private func attempt(_ model: TuringModel, _ generate: (ProgramBuilder) -> ModelProgram) -> Attempt {
        let builder = ProgramBuilder(kit)
        let generated = generate(builder)
        if !builder.missing.isEmpty {
            return .missing(builder.missing.map { ($0.capability, refusedForms($0.preferred)) })
        }
        if fillers.isEmpty { return .missing([("bundle filler", refusedForms([.instruction(Encode.mov(.q, .r14, .r14))]))]) }
        let laidOut: LaidOut
        do {
            laidOut = try generated.program.layout(bundleSize: compiled.bundleSize, fillers: fillers)
        } catch {
            return .failed("layout: \(error)")
        }
        let report = verifier.verify(laidOut.bytes, base: 0)
        if let finding = report.findings.first {
            return .failed("the policy's verifier refuses the witness at offset \(finding.offset): [\(finding.kind.rawValue)] \(finding.message)")
        }
        return .witness(Witness(model: model, code: laidOut.bytes, listing: header(model, laidOut) + laidOut.listing,
                                layout: generated.layout, forms: forms(of: laidOut.bytes)))
    }

    private func header(_ model: TuringModel, _ laidOut: LaidOut) -> String {
        """
        # Sieve witness: \(model.summary)
        # Policy: \(compiled.policy.name), content hash \(compiled.contentHashHex)
        # \(laidOut.bytes.count) bytes, \(laidOut.instructionCount) instructions, \(compiled.bundleSize)-byte bundles, base 0.
        # Accepted by the policy's verifier; halting jumps to the end of the code.

        """
    }

    private func forms(of code: [UInt8]) -> [String] {
        var ids = Set<String>()
        var offset = 0
        while offset < code.count, case .instruction(let insn) = verifier.decoder.decode(code, at: offset) {
            ids.insert(verifier.decoder.form(of: insn).id)
            offset += insn.length
        }
        return ids.sorted()
    }

    /// The forms of `items` the policy refuses, each once.
    private func refusedForms(_ items: [Program.Item]) -> [Form] {
        var seen = Set<Int>()
        var out: [Form] = []
        for item in items where !kit.accepts(item) {
            guard case .instruction(let insn) = verifier.decoder.decode(item.probeBytes) else { continue }
            let form = verifier.decoder.form(of: insn)
            if seen.insert(form.index).inserted { out.append(form) }
        }
        return out
    }

    // MARK: - The verdict

    public func check() -> TuringReport {
        var attempts: [(TuringModel, String)] = []
        var closest: [(capability: String, forms: [Form])]?
        for model in TuringModel.preference where model.strong {
            switch attempt(model) {
            case .witness(let w):
                return TuringReport(verdict: .turingComplete, model: model, witness: w, missing: [], repair: [], lemma: nil, attempts: attempts)
            case .missing(let lacks):
                attempts.append((model, "lacks " + lacks.map(\.capability).joined(separator: ", ")))
                if closest == nil || Self.formCount(lacks) < Self.formCount(closest!) { closest = lacks }
            case .failed(let why):
                attempts.append((model, why))
            }
        }
        let missing = closest?.map(\.capability) ?? []
        let repair = Self.union(closest ?? [])
        let facts = SubsetFacts(compiled)
        if !facts.backwardTransfer {
            return TuringReport(verdict: .notTuringComplete, model: nil, witness: nil, missing: missing, repair: repair,
                                lemma: "NL1: no accepted instruction transfers control, so every run executes each instruction at most once and halts",
                                attempts: attempts)
        }
        if case .witness(let w) = attempt(.minsky) {
            let lemma = !facts.indexedStore && facts.stackStore
                ? "NL3: the stack is the only memory written through a changing address: a pushdown automaton, not a Turing machine"
                : !facts.indexedStore ? "NL2: no accepted store writes through a data-dependent address: the writable state is registers and fixed cells, whatever the sandbox's size"
                : "the counters live in registers: no strong model's capabilities are all derived"
            return TuringReport(verdict: .weak, model: .minsky, witness: w, missing: missing, repair: repair, lemma: lemma, attempts: attempts)
        }
        if !facts.dataInfluencesControl {
            return TuringReport(verdict: .notTuringComplete, model: nil, witness: nil, missing: missing, repair: repair,
                                lemma: "NL4: no accepted instruction lets data choose the path, an address or a fault: every run on every input follows one path",
                                attempts: attempts)
        }
        return TuringReport(verdict: .unknown, model: nil, witness: nil, missing: missing, repair: repair, lemma: nil, attempts: attempts)
    }

    static func formCount(_ lacks: [(capability: String, forms: [Form])]) -> Int { union(lacks).count }

    static func union(_ lacks: [(capability: String, forms: [Form])]) -> [Form] {
        var seen = Set<Int>()
        return lacks.flatMap(\.forms).filter { seen.insert($0.index).inserted }
    }
}

/// What the accepted forms can do, for the negative lemmas (research/turing.md §3.4).
struct SubsetFacts {
    var backwardTransfer = false
    var indexedStore = false
    var stackStore = false
    var dataInfluencesControl = false

    init(_ compiled: CompiledPolicy) {
        let forbidding = compiled.model == .naclX86_64
        for form in compiled.database.forms {
            let plan = compiled.plans[form.index]
            guard plan.decision != .refuse, !(forbidding && plan.alwaysRefusedByNaCl) else { continue }
            if form.flow.map({ [.jmp, .jcc, .call, .icall, .ijmp, .ret, .xbegin].contains($0) }) ?? false { backwardTransfer = true }
            let memory = Self.memoryInstancesMayBeAccepted(form, compiled)
            let writesMemory = form.operands.contains { $0.kind.isMemory && $0.access.writes && (memory || $0.kind.location == .implicitMemory) }
            let readsMemory = memory && form.operands.contains { $0.kind.isMemory && $0.access.reads } && !form.classes.contains(.stack)
            if writesMemory {
                if form.classes.contains(.stack) && !form.operands.contains(where: { $0.kind.location != .implicitMemory && $0.kind.isMemory }) {
                    stackStore = true
                } else {
                    indexedStore = true
                }
            }
            // The database lists the stack slot a push or call writes only as the use of %rsp.
            if form.classes.contains(.stack) && (form.mnemonic.hasPrefix("push") || form.flow == .call || form.flow == .icall) {
                stackStore = true
            }
            let flagsChoose = form.flow == .jcc || ["cmov", "set", "adc", "sbb", "rcl", "rcr"].contains { form.mnemonic.hasPrefix($0) }
            if flagsChoose || readsMemory || form.flow == .ijmp || form.flow == .icall || ["div", "idiv"].contains(form.mnemonic) {
                dataInfluencesControl = true
            }
        }
    }
}

extension Witness {
    /// An input the witness can run on, with what it computes: the data at %r15.
    public var example: (data: [UInt8], description: String)? {
        switch model {
        case .subleq: (Subleq.image(Subleq.multiplyExample), "SUBLEQ program computing 3 x 4: word 13 ends as 12")
        case .tape: (TapeMachine.image([3, 4, 0, 0]), "tape 3 4 0 0: cell 2 ends as 12")
        case .movTable:
            (MovTableMachine.image(.busyBeaver4, tape: [UInt32](repeating: 0, count: MovTableMachine.tapeCells), head: MovTableMachine.tapeCells / 2),
             "the 4-state busy beaver on a blank tape: 13 ones after 107 steps")
        case .minsky: nil
        }
    }
}

extension SubsetFacts {
    /// Whether an instance with a ModRM memory operand may be accepted: no when every rule that
    /// could accept the form accepts register instances only (`operands: register`). Errs
    /// towards yes, which only ever weakens a lemma.
    static func memoryInstancesMayBeAccepted(_ form: Form, _ compiled: CompiledPolicy) -> Bool {
        let policy = compiled.policy
        let decision = policy.accepted.decisions[form.index]
        if decision.conditional.isEmpty { return true }
        if let u = decision.unconditional, policy.rules[u].accepts { return true }
        return decision.conditional.contains { index in
            let rule = policy.rules[index]
            return rule.accepts && (rule.selector.operands.map { $0.contains(.memory) } ?? true)
        }
    }
}
