/// The universal machines a witness can be (DESIGN §10): three that compute with memory that
/// scales with the sandbox, and Minsky's counter machine, whose counters live in registers.
public enum TuringModel: String, Sendable, CaseIterable, Codable {
    case subleq = "subleq-interpreter"
    case tape = "tape-machine"
    case movTable = "mov-table-machine"
    case minsky = "minsky-counter-machine"

    /// Strong: Turing-complete modulo the sandbox's memory. Weak: counters in 64-bit registers,
    /// a finite machine in reality.
    public var strong: Bool { self != .minsky }

    /// The order the checker tries them in.
    public static let preference: [TuringModel] = [.subleq, .tape, .movTable, .minsky]

    public var summary: String {
        switch self {
        case .subleq: "a SUBLEQ interpreter over 64-bit cells at %r15"
        case .tape: "a Brainfuck-style tape machine compiled to code, 32-bit cells at %r15"
        case .movTable: "Dolan's mov-only table machine: a Turing-machine interpreter made of MOVs and one backward jump"
        case .minsky: "a Minsky counter machine with its counters in registers (weak: memory does not scale)"
        }
    }
}

/// What a model's generator produces: the program, and what its data must look like.
struct ModelProgram {
    var program: Program
    /// The data at %r15 the program expects, in words a person can follow.
    var layout: String
}

/// Emits units while recording the capabilities no alternative provides.
final class ProgramBuilder {
    var program = Program()
    let kit: Toolkit
    /// Capability name → the preferred alternative's instructions (for the repair).
    private(set) var missing: [(capability: String, preferred: [Program.Item])] = []

    init(_ kit: Toolkit) { self.kit = kit }

    func emit(_ capability: String, _ pick: Pick, _ comment: String = "") {
        if let items = pick.chosen {
            program.emit(items, comment)
        } else if !missing.contains(where: { $0.capability == (pick.lacking ?? capability) }) {
            missing.append((pick.lacking ?? capability, pick.preferred))
        }
    }

    func label(_ name: String) -> Program.Label { program.label(name) }
    func place(_ label: Program.Label) { program.place(label) }
}

// MARK: - SUBLEQ

/// `subleq a b c`: M[b] -= M[a]; if the result is <= 0 (as JLE after the SUB sees it), go to c,
/// halting when c < 0; else go on at pc + 3. Cells are 64-bit words at %r15 + 8·i, the program
/// starts at word 0.
public enum Subleq {
    static let pc = Register.rbx, a = Register.rax, b = Register.rcx, c = Register.rdx

    static func build(_ builder: ProgramBuilder) -> ModelProgram {
        let kit = builder.kit
        let loop = builder.label("loop"), take = builder.label("take")
        builder.emit("zero", kit.zero(pc), "pc = 0")
        builder.place(loop)
        builder.emit("indexed load", kit.load(.q, a, Memory(index: pc, scale: 8)), "a = M[pc]")
        builder.emit("indexed load", kit.load(.q, b, Memory(index: pc, scale: 8, displacement: 8)), "b = M[pc+1]")
        builder.emit("indexed load", kit.load(.q, c, Memory(index: pc, scale: 8, displacement: 16)), "c = M[pc+2]")
        builder.emit("indexed load", kit.load(.q, a, Memory(index: a, scale: 8)), "M[a]")
        builder.emit("indexed store", kit.subtractFromMemory(Memory(index: b, scale: 8), a, scratch: .rsi)
                        + kit.branchLessOrEqual(to: take), "M[b] -= M[a]; <= 0: take the branch")
        builder.emit("increment", kit.add(.l, pc, 3), "pc += 3")
        builder.emit("backward jump", kit.jump(to: loop))
        builder.place(take)
        builder.emit("branch-if-zero", kit.branchIfNegative(.q, c, to: builder.program.exit), "c < 0 halts")
        builder.emit("select", kit.copy(.l, pc, c), "pc = c")
        builder.emit("backward jump", kit.jump(to: loop))
        return ModelProgram(program: builder.program, layout: """
            SUBLEQ interpreter. Memory: 64-bit little-endian words at %r15 + 8*i; the program starts at
            word 0 as triples a b c. Each step: M[b] -= M[a]; if the result is <= 0 (signed, as JLE sees
            the SUB's flags) go to c, halting when c < 0; else go on at pc + 3. Halting jumps to the end
            of the code (bundle-aligned), where the runtime takes over.
            """)
    }

    /// 3 × 4: Z (word 13) += 3, Y (word 14) times; halts with Z = 12.
    public static let multiplyExample: [Int64] = [12, 13, 3, 15, 14, 9, 16, 16, 0, 16, 16, -1, -3, 0, 4, 1, 0]

    /// A memory image of 64-bit words.
    public static func image(_ words: [Int64]) -> [UInt8] {
        words.flatMap { w in (0..<8).map { UInt8(truncatingIfNeeded: w >> (8 * $0)) } }
    }
}

// MARK: - Tape machine

/// Brainfuck without I/O, compiled: `+ - < > [ ]` over 32-bit cells at %r15 + 4·i, the pointer
/// starting at cell 0. The program ends by jumping to the end of the code.
public enum TapeMachine {
    static let pointer = Register.rbx

    public static let multiply = "[>[>+>+<<-]>>[<<+>>-]<<<-]"  // cell2 = cell0 * cell1 (cell3 scratch)

    static func build(_ builder: ProgramBuilder, source: String) -> ModelProgram {
        let kit = builder.kit
        let cell = Memory(index: pointer, scale: 4)
        builder.emit("zero", kit.zero(pointer), "pointer = 0")
        var open: [(start: Program.Label, after: Program.Label, body: Program.Label)] = []
        var pendingAfter: Program.Label?
        func before() { if let label = pendingAfter { builder.place(label); pendingAfter = nil } }
        for ch in source {
            switch ch {
            case "+": before(); builder.emit("increment", kit.addToMemory(cell, 1, scratch: .rax), "+")
            case "-": before(); builder.emit("decrement", kit.addToMemory(cell, -1, scratch: .rax), "-")
            case ">": before(); builder.emit("increment", kit.add(.l, pointer, 1), ">")
            case "<": before(); builder.emit("decrement", kit.add(.l, pointer, -1), "<")
            case "[":
                before()
                let k = open.count
                let labels = (builder.label("open\(k)_\(builder.program.units.count)"), builder.label("after\(k)_\(builder.program.units.count)"),
                              builder.label("body\(k)_\(builder.program.units.count)"))
                builder.place(labels.0)
                builder.emit("branch-if-zero", kit.branchOnCell(cell, zero: true, scratch: .rax, to: labels.1), "[")
                builder.place(labels.2)
                open.append((labels.0, labels.1, labels.2))
            case "]":
                guard let loop = open.popLast() else { continue }
                before()
                builder.emit("backward jump", kit.branchOnCell(cell, zero: false, scratch: .rax, to: loop.body), "]")
                pendingAfter = loop.after
            default: continue
            }
        }
        before()
        builder.emit("backward jump", kit.jump(to: builder.program.exit), "halt")
        return ModelProgram(program: builder.program, layout: """
            Tape machine (Brainfuck without I/O) compiled from: \(source)
            Tape: 32-bit little-endian cells at %r15 + 4*i; the pointer (%ebx) starts at cell 0.
            The program ends by jumping to the end of the code (bundle-aligned).
            """)
    }

    public static func image(_ cells: [UInt32]) -> [UInt8] {
        cells.flatMap { c in (0..<4).map { UInt8(truncatingIfNeeded: c >> (8 * $0)) } }
    }
}

// MARK: - Dolan's mov-only table machine

/// A Turing machine with up to three symbols, as tables the mov-only interpreter walks.
public struct TuringMachine: Sendable {
    public enum Move: Sendable { case left, right }
    public struct Rule: Sendable {
        public var write: Int, move: Move, next: Int
        public init(write: Int, move: Move, next: Int) { self.write = write; self.move = move; self.next = next }
    }
    /// rules[state][symbol]; a `next` equal to `rules.count` halts.
    public var rules: [[Rule]]
    public init(rules: [[Rule]]) { self.rules = rules }

    /// The 4-state, 2-symbol busy beaver: 107 steps, 13 ones.
    public static let busyBeaver4 = TuringMachine(rules: [
        [Rule(write: 1, move: .right, next: 1), Rule(write: 1, move: .left, next: 1)],
        [Rule(write: 1, move: .left, next: 0), Rule(write: 0, move: .left, next: 2)],
        [Rule(write: 1, move: .right, next: 4), Rule(write: 1, move: .left, next: 3)],
        [Rule(write: 1, move: .right, next: 3), Rule(write: 0, move: .right, next: 0)],
    ])
}

/// Dolan's construction under NaCl (research/turing.md §1.1, §4): every step is the same
/// straight line of MOVs; the transition is chosen by indexed loads from tables, a choice
/// between values by storing them to fixed cells and loading one back by index, and the halt
/// by a load through an index the halting record makes point outside the mapped sandbox.
public enum MovTableMachine {
    static let head = Register.rbx, state = Register.rcx, symbol = Register.rax, value = Register.rdx
    static let record = Register.rsi, probe = Register.rdi

    // Byte offsets from %r15.
    static let initialHead: Int32 = 0x0, initialState: Int32 = 0x4
    static let select3: Int32 = 0x10, select2: Int32 = 0x20
    public static let tapeStart: Int32 = 0x1000
    /// Tape cells (32-bit), and the successor and predecessor tables over head positions.
    public static let tapeCells = 1024
    static let successors = tapeStart + Int32(4 * tapeCells), predecessors = successors + Int32(4 * tapeCells)
    static let rowsStart = predecessors + Int32(4 * tapeCells)
    /// The halting record's probe index: a load there faults (the sandbox maps only low memory).
    public static let haltProbe: UInt32 = 0xFFFF_F000

    static func build(_ builder: ProgramBuilder) -> ModelProgram {
        let kit = builder.kit
        let loop = builder.label("step")
        builder.emit("indexed load", kit.load(.l, head, Memory(displacement: initialHead)), "head = initial head")
        builder.emit("indexed load", kit.load(.l, state, Memory(displacement: initialState)), "state = initial row")
        builder.place(loop)
        builder.emit("indexed load", kit.load(.l, symbol, Memory(index: head, scale: 4, displacement: tapeStart)), "symbol = tape[head]")
        for k: Int32 in 0..<3 {
            builder.emit("indexed load", kit.load(.l, value, Memory(index: state, displacement: 4 * k)), "row[\(k)]")
            builder.emit("indexed store", kit.store(.l, Memory(displacement: select3 + 4 * k), value), "select[\(k)] = row[\(k)]")
        }
        builder.emit("select", kit.load(.l, record, Memory(index: symbol, scale: 4, displacement: select3)), "record = select[symbol]")
        builder.emit("indexed load", kit.load(.l, probe, Memory(index: record, displacement: 12)), "probe index")
        builder.emit("indexed load", kit.load(.l, value, Memory(index: probe)), "faults when the record halts")
        builder.emit("indexed load", kit.load(.l, symbol, Memory(index: record)), "symbol to write")
        builder.emit("indexed store", kit.store(.l, Memory(index: head, scale: 4, displacement: tapeStart), symbol), "tape[head] = symbol")
        builder.emit("decrement", kit.load(.l, value, Memory(index: head, scale: 4, displacement: predecessors)), "head - 1")
        builder.emit("indexed store", kit.store(.l, Memory(displacement: select2), value), "select[0] = head - 1")
        builder.emit("increment", kit.load(.l, value, Memory(index: head, scale: 4, displacement: successors)), "head + 1")
        builder.emit("indexed store", kit.store(.l, Memory(displacement: select2 + 4), value), "select[1] = head + 1")
        builder.emit("indexed load", kit.load(.l, symbol, Memory(index: record, displacement: 4)), "direction")
        builder.emit("select", kit.load(.l, head, Memory(index: symbol, scale: 4, displacement: select2)), "head = select[direction]")
        builder.emit("indexed load", kit.load(.l, state, Memory(index: record, displacement: 8)), "state = next row")
        builder.emit("backward jump", kit.jump(to: loop))
        return ModelProgram(program: builder.program, layout: """
            Mov-only table machine (a Turing-machine interpreter). 32-bit little-endian cells at %r15:
              0x\(String(initialHead, radix: 16)): initial head (a tape cell index)   0x\(String(initialState, radix: 16)): initial state (a row's byte offset)
              0x\(String(select3, radix: 16))..0x\(String(select3 + 11, radix: 16)), 0x\(String(select2, radix: 16))..0x\(String(select2 + 7, radix: 16)): scratch cells for the selections
              0x\(String(tapeStart, radix: 16)): the tape, \(tapeCells) cells; 0x\(String(successors, radix: 16)): head + 1 per head; 0x\(String(predecessors, radix: 16)): head - 1 per head
              0x\(String(rowsStart, radix: 16)): one row per state, three record offsets (one per symbol); then the records:
                16 bytes each: symbol to write, direction (0 left, 1 right), next row, probe index
            The halting state's records carry the probe 0x\(String(haltProbe, radix: 16)): the load through it faults,
            which is how the machine stops (the sandbox maps only its low memory there).
            """)
    }

    /// The memory image for `machine` on `tape` (at most `tapeCells` cells) with the head at `head`.
    public static func image(_ machine: TuringMachine, tape: [UInt32], head: Int) -> [UInt8] {
        let states = machine.rules.count
        let rows = rowsStart, records = rows + Int32(12 * (states + 1))
        var words: [Int32: UInt32] = [:]
        words[initialHead] = UInt32(head)
        words[initialState] = UInt32(rows)
        for (k, v) in tape.enumerated() { words[tapeStart + Int32(4 * k)] = v }
        for p in 0..<tapeCells {
            words[successors + Int32(4 * p)] = UInt32(truncatingIfNeeded: p + 1)
            words[predecessors + Int32(4 * p)] = UInt32(truncatingIfNeeded: p - 1)
        }
        func record(_ s: Int, _ symbol: Int) -> Int32 { records + Int32(16 * (3 * s + symbol)) }
        for s in 0...states {
            for symbol in 0..<3 {
                let at = record(s, symbol)
                words[rows + Int32(12 * s + 4 * symbol)] = UInt32(at)
                if s < states, symbol < machine.rules[s].count {
                    let rule = machine.rules[s][symbol]
                    words[at] = UInt32(rule.write)
                    words[at + 4] = rule.move == .left ? 0 : 1
                    words[at + 8] = UInt32(rows + Int32(12 * rule.next))
                    words[at + 12] = 0
                } else {
                    words[at + 12] = haltProbe  // the halting state, and symbols the machine lacks
                }
            }
        }
        let size = Int(records + Int32(16 * 3 * (states + 1)))
        var bytes = [UInt8](repeating: 0, count: size)
        for (offset, value) in words { for k in 0..<4 { bytes[Int(offset) + k] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(k))) } }
        return bytes
    }

    /// The tape as the machine left it in `memory`.
    public static func tape(in memory: UnsafeRawBufferPointer) -> [UInt32] {
        (0..<tapeCells).map { memory.load(fromByteOffset: Int(tapeStart) + 4 * $0, as: UInt32.self) }
    }
}

// MARK: - Minsky counter machine

/// A program over counters: increment, decrement-or-jump-when-zero, jump, halt.
public struct CounterProgram: Sendable {
    public enum Step: Sendable {
        case increment(Int)
        /// Jump to the step when the counter is zero, else decrement it.
        case decrementOrJump(Int, to: Int)
        case jump(Int)
        case halt
    }
    public var counters: Int
    public var steps: [Step]
    public init(counters: Int, steps: [Step]) { self.counters = counters; self.steps = steps }

    /// counter 2 = counter 0 × counter 1 (counter 3 scratch; counter 1 is restored).
    public static let multiply = CounterProgram(counters: 4, steps: [
        .decrementOrJump(0, to: 8),   // 0: a == 0? halt; else a -= 1
        .decrementOrJump(1, to: 5),   // 1: move b into c and d
        .increment(2), .increment(3), .jump(1),
        .decrementOrJump(3, to: 0),   // 5: move d back into b, then the next round
        .increment(1), .jump(5),
        .halt,                        // 8
    ])
}

public enum MinskyMachine {
    /// Counters in %r8, %r9, ...: 64-bit registers, so the machine is weak.
    public static let counterRegisters: [Register] = [.r8, .r9, .r10, .r11, .r12, .r13]

    static func build(_ builder: ProgramBuilder, program: CounterProgram, inputs: [UInt32]) -> ModelProgram {
        let kit = builder.kit
        let labels = program.steps.indices.map { builder.label("step\($0)") }
        for (k, value) in inputs.enumerated() {
            builder.emit("zero", kit.setImmediate(counterRegisters[k], value), "counter \(k) = \(value)")
        }
        for (k, step) in program.steps.enumerated() {
            builder.place(labels[k])
            switch step {
            case .increment(let c): builder.emit("increment", kit.add(.q, counterRegisters[c], 1), "counter \(c) += 1")
            case .decrementOrJump(let c, let target):
                builder.emit("branch-if-zero", kit.branchIfZero(.q, counterRegisters[c], to: labels[target]), "counter \(c) == 0?")
                builder.emit("decrement", kit.add(.q, counterRegisters[c], -1), "counter \(c) -= 1")
            case .jump(let target): builder.emit("backward jump", kit.jump(to: labels[target]))
            case .halt: builder.emit("backward jump", kit.jump(to: builder.program.exit), "halt")
            }
        }
        return ModelProgram(program: builder.program, layout: """
            Minsky counter machine: counters in %r8.. (64-bit registers), inputs as immediates in the
            code, results left in the registers at the end of the code. No memory: a weak witness.
            """)
    }
}
