import Verifier

/// A primitive's instructions: the first alternative the policy accepts (nil: none), and the
/// preferred alternative, whose refused forms are the repair to suggest when none is accepted.
struct Pick {
    var chosen: [Program.Item]?
    var preferred: [Program.Item]
    /// The capability to report when the failure lies in a part (the index restriction of an access).
    var lacking: String?

    static func + (a: Pick, b: Pick) -> Pick {
        Pick(chosen: a.chosen.flatMap { x in b.chosen.map { x + $0 } }, preferred: a.preferred + b.preferred,
             lacking: a.chosen == nil ? a.lacking : b.chosen == nil ? b.lacking : nil)
    }
}

extension Program.Item {
    /// The bytes the policy judges (a branch with a zero displacement: acceptance does not depend on it).
    var probeBytes: [UInt8] {
        switch self {
        case .instruction(let e): e.bytes
        case .branch(let opcode, let rel32, _, _): opcode + Array(repeating: 0, count: rel32 ? 4 : 1)
        }
    }
}

/// The instruction sequences witnesses are written in. Each primitive lists its alternatives
/// (DESIGN §10, research/turing.md §3.2) and picks the first whose every instruction the policy
/// accepts, so that a witness adapts to what a policy bans.
///
/// Flags are never live across units: a flag producer and its consumer are always emitted in
/// one unit, so only fillers come between them and the next unit.
struct Toolkit {
    let verifier: Verifier

    func accepts(_ item: Program.Item) -> Bool { verifier.acceptsAlone(item.probeBytes) }

    func first(_ alternatives: [[Program.Item]]) -> Pick {
        Pick(chosen: alternatives.first { !$0.isEmpty && $0.allSatisfy(accepts) }, preferred: alternatives[0])
    }
    func first(_ alternatives: [[Encoded]]) -> Pick { first(alternatives.map { $0.map { Program.Item.instruction($0) } }) }
    func one(_ e: Encoded) -> Pick { first([[e]]) }

    // MARK: - Registers

    /// NaCl's restriction of an index: a zero-extending 32-bit write of the register itself.
    func restrict(_ r: Register) -> Pick {
        var pick = restrictAlternatives(r)
        if pick.chosen == nil { pick.lacking = "index restriction" }
        return pick
    }

    private func restrictAlternatives(_ r: Register) -> Pick {
        first([[Encode.mov(.l, r, r)], [Encode.movLoadForm(.l, r, r)], [Encode.lea(.l, r, r, 0)],
               [Encode.alu(.add, .l, r, immediate: 0)], [Encode.alu(.or, .l, r, immediate: 0)],
               [Encode.alu(.and, .l, r, immediate: -1)], [Encode.alu(.xor, .l, r, immediate: 0)],
               [Encode.alu(.sub, .l, r, immediate: 0)]])
    }

    func zero(_ r: Register) -> Pick {
        first([[Encode.alu(.xor, .l, r, r)], [Encode.alu(.sub, .l, r, r)], [Encode.movImmediate(r, 0)],
               [Encode.alu(.and, .l, r, immediate: 0)]])
    }

    func copy(_ width: Width, _ dst: Register, _ src: Register) -> Pick {
        first([[Encode.mov(width, dst, src)], [Encode.movLoadForm(width, dst, src)], [Encode.lea(width, dst, src, 0)]])
    }

    /// r += k (k small); flags clobbered.
    func add(_ width: Width, _ r: Register, _ k: Int8) -> Pick {
        first([[Encode.alu(.add, width, r, immediate: Int32(k))], [Encode.alu(.sub, width, r, immediate: -Int32(k))],
               [Encode.lea(width, r, r, k)]])
    }

    func setImmediate(_ r: Register, _ value: UInt32) -> Pick {
        let viaZero = zero(r).chosen.map { $0 + [.instruction(Encode.alu(.add, .l, r, immediate: Int32(bitPattern: value)))] } ?? []
        return first([[.instruction(Encode.movImmediate(r, value))], viaZero])
    }

    /// A restriction that leaves the flags alone (a MOV or LEA), for use between a flag
    /// producer and its consumer.
    func restrictKeepingFlags(_ r: Register) -> Pick {
        first([[Encode.mov(.l, r, r)], [Encode.movLoadForm(.l, r, r)], [Encode.lea(.l, r, r, 0)]])
    }

    // MARK: - Memory

    /// An indexed access with the restriction of its index just before it.
    func guarded(_ m: Memory, _ access: Pick) -> Pick {
        guard let index = m.index else { return access }
        return restrict(index) + access
    }

    func load(_ width: Width, _ dst: Register, _ m: Memory) -> Pick { guarded(m, one(Encode.load(width, dst, m))) }
    func store(_ width: Width, _ m: Memory, _ src: Register) -> Pick { guarded(m, one(Encode.store(width, m, src))) }

    /// m -= src with the flags of that SUB (the SUBLEQ step); `scratch` for the load-sub-store form.
    func subtractFromMemory(_ m: Memory, _ src: Register, scratch: Register) -> Pick {
        let r = restrict(m.index!)
        guard let restriction = r.chosen else { return r + one(Encode.alu(.sub, .q, m, src)) }
        let rmw: [Program.Item] = [.instruction(Encode.alu(.sub, .q, m, src))]
        // Load, subtract, store: the second restriction sits between the SUB and its branch.
        let keep = restrictKeepingFlags(m.index!).chosen ?? []
        let split: [Program.Item] = keep.isEmpty ? [] : [.instruction(Encode.load(.q, scratch, m)), .instruction(Encode.alu(.sub, .q, scratch, src))]
            + keep + [.instruction(Encode.store(.q, m, scratch))]
        return first([restriction + rmw, split.isEmpty ? [] : restriction + split])
    }

    /// m += k on a 32-bit cell.
    func addToMemory(_ m: Memory, _ k: Int8, scratch: Register) -> Pick {
        let r = restrict(m.index!)
        guard let restriction = r.chosen else { return r + one(Encode.alu(.add, .l, m, immediate: k)) }
        var alternatives: [[Program.Item]] = [restriction + [.instruction(Encode.alu(.add, .l, m, immediate: k))],
                                              restriction + [.instruction(Encode.alu(.sub, .l, m, immediate: -k))]]
        if let bump = add(.l, scratch, k).chosen {
            alternatives.append(restriction + [.instruction(Encode.load(.l, scratch, m))] + bump + restriction
                                + [.instruction(Encode.store(.l, m, scratch))])
        }
        return first(alternatives)
    }

    // MARK: - Control

    func jump(to target: Program.Label) -> Pick {
        first([[.branch(opcode: Encode.jump(rel32: true), rel32: true, target: target, text: "jmp")],
               [.branch(opcode: Encode.jump(rel32: false), rel32: false, target: target, text: "jmp")],
               // A complementary pair of conditional jumps is a jump.
               [.branch(opcode: Encode.jcc(.e, rel32: true), rel32: true, target: target, text: "je"),
                .branch(opcode: Encode.jcc(.ne, rel32: true), rel32: true, target: target, text: "jne")],
               [.branch(opcode: Encode.jcc(.b, rel32: true), rel32: true, target: target, text: "jb"),
                .branch(opcode: Encode.jcc(.ae, rel32: true), rel32: true, target: target, text: "jae")]])
    }

    func branch(_ c: Condition, to target: Program.Label) -> Pick {
        first([[.branch(opcode: Encode.jcc(c, rel32: true), rel32: true, target: target, text: "j\(c.name)")],
               [.branch(opcode: Encode.jcc(c, rel32: false), rel32: false, target: target, text: "j\(c.name)")]])
    }

    /// A jump when the flags of a SUB say "less or equal" (ZF, or SF != OF).
    func branchLessOrEqual(to target: Program.Label) -> Pick {
        let le = branch(.le, to: target)
        if le.chosen != nil { return le }
        let pair = branch(.l, to: target) + branch(.e, to: target)
        return Pick(chosen: pair.chosen, preferred: le.preferred)
    }

    /// A jump when `r` is zero: a test and JE in one unit.
    func branchIfZero(_ width: Width, _ r: Register, to target: Program.Label) -> Pick {
        let je = branch(.e, to: target)
        return first([Encode.test(width, r, r), Encode.alu(.cmp, width, r, immediate: 0), Encode.alu(.or, width, r, r)]
            .map { [Program.Item.instruction($0)] + (je.chosen ?? je.preferred) })
    }

    func branchIfNegative(_ width: Width, _ r: Register, to target: Program.Label) -> Pick {
        let tests = [Encode.alu(.cmp, width, r, immediate: 0), Encode.test(width, r, r)]
        let jumps = [branch(.l, to: target), branch(.s, to: target)]
        var alternatives: [[Program.Item]] = []
        for t in tests { for j in jumps { alternatives.append([.instruction(t)] + (j.chosen ?? j.preferred)) } }
        return first(alternatives)
    }

    /// A 32-bit cell compared with 0, then a jump when it is zero (`zero`) or not.
    func branchOnCell(_ m: Memory, zero: Bool, scratch: Register, to target: Program.Label) -> Pick {
        let condition: Condition = zero ? .e : .ne
        let j = branch(condition, to: target)
        let jumpItems = j.chosen ?? j.preferred
        let r = restrict(m.index!)
        let restriction = r.chosen ?? r.preferred
        return first([restriction + [.instruction(Encode.alu(.cmp, .l, m, immediate: 0))] + jumpItems,
                      restriction + [.instruction(Encode.load(.l, scratch, m)), .instruction(Encode.test(.l, scratch, scratch))] + jumpItems,
                      restriction + [.instruction(Encode.load(.l, scratch, m)), .instruction(Encode.alu(.cmp, .l, scratch, immediate: 0))] + jumpItems])
    }

    // MARK: - Layout

    /// Harmless instructions to pad bundles with, one per length: NOPs, else moves into the
    /// scratch register %r14 (which no witness uses) and loads into it from the sandbox base.
    func fillers() -> [Encoded] {
        let nops = Encode.nops.map { Encoded(bytes: $0, text: $0.count == 1 ? "nop" : "nop (\($0.count) bytes)") }
        let moves = [Encode.mov(.q, .r14, .r14), Encode.load(.q, .r14, Memory(displacement: 0x10)),
                     Encoded(bytes: [0x4D, 0x8B, 0x74, 0x27, 0x10], text: "mov 16(%r15,%riz,1),%r14"),
                     Encode.load(.q, .r14, Memory(displacement: 0x1000)),
                     Encoded(bytes: [0x4D, 0x8B, 0xB4, 0x27, 0, 0x10, 0, 0], text: "mov 4096(%r15,%riz,1),%r14"),
                     Encode.lea(.q, .r14, .r14, 0)]
        var byLength: [Int: Encoded] = [:]
        for e in nops + moves where byLength[e.bytes.count] == nil && verifier.acceptsAlone(e.bytes) { byLength[e.bytes.count] = e }
        return byLength.keys.sorted().map { byLength[$0]! }
    }
}
