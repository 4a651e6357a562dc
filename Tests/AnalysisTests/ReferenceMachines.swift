import Analysis

/// Independent interpreters the native witnesses are compared with.
enum Reference {
    /// SUBLEQ as the witness runs it: 64-bit wrapping cells, "<= 0" as JLE sees the SUB's flags
    /// (zero, or sign different from overflow), halting on a taken branch to c < 0, pc 32-bit.
    static func subleq(_ initial: [Int64], maxSteps: Int = 10_000_000) -> [Int64] {
        var m = initial
        var pc = 0
        for _ in 0..<maxSteps {
            let a = Int(m[pc]), b = Int(m[pc + 1]), c = m[pc + 2]
            let (result, overflow) = m[b].subtractingReportingOverflow(m[a])
            m[b] = result
            if result == 0 || (result < 0) != overflow {
                if c < 0 { return m }
                pc = Int(UInt32(truncatingIfNeeded: c))
            } else {
                pc += 3
            }
        }
        fatalError("SUBLEQ program did not halt")
    }

    static func tape(_ source: String, _ initial: [UInt32]) -> [UInt32] {
        var cells = initial + [UInt32](repeating: 0, count: 64)
        let program = Array(source.filter { "+-<>[]".contains($0) })
        var match: [Int: Int] = [:], stack: [Int] = []
        for (k, ch) in program.enumerated() {
            if ch == "[" { stack.append(k) } else if ch == "]" { let o = stack.removeLast(); match[o] = k; match[k] = o }
        }
        var p = 0, ip = 0
        while ip < program.count {
            switch program[ip] {
            case "+": cells[p] &+= 1
            case "-": cells[p] &-= 1
            case ">": p += 1
            case "<": p -= 1
            case "[": if cells[p] == 0 { ip = match[ip]! }
            case "]": if cells[p] != 0 { ip = match[ip]! }
            default: break
            }
            ip += 1
        }
        return cells
    }

    static func turing(_ machine: TuringMachine, tape initial: [UInt32], head start: Int) -> (tape: [UInt32], steps: Int) {
        var tape = initial, head = start, state = 0, steps = 0
        while state < machine.rules.count {
            let rule = machine.rules[state][Int(tape[head])]
            tape[head] = UInt32(rule.write)
            head += rule.move == .left ? -1 : 1
            state = rule.next
            steps += 1
        }
        return (tape, steps)
    }

    static func counters(_ program: CounterProgram, _ inputs: [UInt64]) -> [UInt64] {
        var c = inputs + [UInt64](repeating: 0, count: max(0, program.counters - inputs.count))
        var ip = 0
        while true {
            switch program.steps[ip] {
            case .increment(let k): c[k] += 1; ip += 1
            case .decrementOrJump(let k, let target): if c[k] == 0 { ip = target } else { c[k] -= 1; ip += 1 }
            case .jump(let target): ip = target
            case .halt: return c
            }
        }
    }
}

/// A SUBLEQ macro assembler for the test programs: addresses are word indices.
struct SubleqAssembler {
    var words: [Int64] = []
    var fixups: [(at: Int, label: String)] = []
    var labels: [String: Int] = [:]

    mutating func label(_ name: String) { labels[name] = words.count }
    /// `subleq a b c`, c a label ("next" for the next instruction, "halt" for -1).
    mutating func subleq(_ a: String, _ b: String, _ c: String = "next") {
        let at = words.count
        for (k, operand) in [a, b, c].enumerated() { fixups.append((at + k, operand)); words.append(0) }
        if c == "next" { fixups.removeLast(); words[at + 2] = Int64(at + 3) }
        if c == "halt" { fixups.removeLast(); words[at + 2] = -1 }
    }
    mutating func data(_ name: String, _ value: Int64) { labels[name] = words.count; words.append(value) }
    // b += a, with Z a zero cell.
    mutating func add(_ a: String, _ b: String) { subleq(a, "Z"); subleq("Z", b); subleq("Z", "Z") }
    // b = a
    mutating func move(_ a: String, _ b: String) { subleq(b, b); add(a, b) }
    mutating func jump(_ target: String) { subleq("Z", "Z", target) }

    func assembled() -> [Int64] {
        var out = words
        for (at, label) in fixups { out[at] = Int64(labels[label]!) }
        return out
    }

    /// fib(n) into F: A = 0, B = 1; n times: T = A + B; A = B; B = T.
    static func fibonacci(_ n: Int64) -> (words: [Int64], result: Int) {
        var s = SubleqAssembler()
        s.label("loop")
        s.subleq("ONE", "N", "done")  // N -= 1; N <= 0: done (N starts at n + 1)
        s.move("A", "T"); s.add("B", "T"); s.move("B", "A"); s.move("T", "B")
        s.jump("loop")
        s.label("done")
        s.subleq("Z", "Z", "halt")
        s.data("Z", 0); s.data("ONE", 1); s.data("N", n + 1); s.data("A", 0); s.data("B", 1); s.data("T", 0)
        return (s.assembled(), s.labels["A"]!)
    }
}
