import Policy
import SieveCore
import Testing
@testable import Verifier
import X86

/// One module verified in pieces on several threads (`sieve_core_split`, `_verify_piece`,
/// `_join`) gives the findings of one thread, in the same order.
@Suite struct ThreadedVerificationTests {
    /// The NaCl executables' code, concatenated: jumps that left one copy land in another (on
    /// bundle starts), so the pieces must judge jumps between them against the whole.
    static func module(copies: Int) throws -> [UInt8] {
        let code = try NaClExecutableTests.code("x64_fib_array_v2.nexe").bytes + NaClExecutableTests.code("x64_hello_world.nexe").bytes
        return Array((0..<copies).map { _ in code }.joined())
    }

    static func run(_ verifier: Verifier, _ code: [UInt8], base: UInt64, threads: Int) -> (VerificationCounts, [Finding]) {
        var findings: [Finding] = []
        let counts = code.withUnsafeBytes { bytes in
            verifier.verify(bytes, base: base, maxFindings: .max, threads: threads) { finding, isWarning in
                if !isWarning { findings.append(finding) }
            }
        }
        return (counts, findings)
    }

    /// Where two lists of findings first differ (nil: nowhere), so that a failure names one finding, not two lists.
    static func firstDifference(_ a: [Finding], _ b: [Finding]) -> Int? {
        a.count == b.count ? Array(zip(a, b)).firstIndex { $0.0 != $0.1 } : min(a.count, b.count)
    }

    @Test func validCodeInPiecesIsAcceptedWithTheSameCounts() throws {
        let code = try Self.module(copies: 8)
        let one = Self.run(Repository.nacl, code, base: 0x20000, threads: 1)
        let four = Self.run(Repository.nacl, code, base: 0x20000, threads: 4)
        #expect(one.0.findings == 0, "the concatenation is NaCl-valid: \(one.1.prefix(3))")
        #expect(four.0 == one.0)
    }

    /// Mutated code: findings of every kind, bad jumps within and between pieces, instructions
    /// that cross piece ends. The same list, in the same order, for 1, 2, 3 and 8 threads.
    @Test(arguments: [1, 2, 3, 8]) func mutatedCodeGivesTheSameFindingsInTheSameOrder(threads: Int) throws {
        var code = try Self.module(copies: 3)
        var random = SplitMix(seed: 0x5eed + UInt64(threads))
        for _ in 0..<2000 { code[Int(random.next() % UInt64(code.count))] = UInt8(truncatingIfNeeded: random.next()) }
        // Jumps retargeted across the module: rel32 jumps into other pieces, on and off instruction starts.
        for _ in 0..<200 {
            let at = Int(random.next() % UInt64(code.count - 8))
            code.replaceSubrange(at..<at + 5, with: [0xE9] + withUnsafeBytes(of: Int32(truncatingIfNeeded: Int64(random.next() % 600_000) - 300_000).littleEndian, Array.init))
        }
        let one = Self.run(Repository.nacl, code, base: 0x20000, threads: 1)
        let many = Self.run(Repository.nacl, code, base: 0x20000, threads: threads)
        #expect(one.0.findings > 1000 && one.1.contains { $0.kind == .badJumpTarget })
        #expect(many.0 == one.0)
        let difference = Self.firstDifference(many.1, one.1)
        #expect(difference == nil, "the lists differ from finding \(difference ?? 0) on")
    }

    /// Valid code whose direct jumps are sent into other pieces: to bundle starts, to instructions within a
    /// bundle, and between instructions. No piece refuses code, so the join judges every jump that leaves a
    /// piece (no second, whole verification): the same findings, in the same order, as one thread.
    @Test(arguments: [2, 3]) func jumpsBetweenPiecesAreJudgedAgainstTheModule(threads: Int) throws {
        var code = try Self.module(copies: 3), starts: [Int] = [], jumps: [Int] = [], at = 0
        while at < code.count, case .instruction(let i) = Decoder.shared.decode(code, at: at) {
            starts.append(at)
            if i.length == 5 && code[at] == 0xE9 { jumps.append(at) }
            at += i.length
        }
        #expect(at == code.count && jumps.count > 100)
        var random = SplitMix(seed: 0x10ad + UInt64(threads))
        for jump in jumps {
            let start = starts[Int(random.next() % UInt64(starts.count))]
            let target = [start & ~31, start, start + 1][Int(random.next() % 3)]   // a bundle, an instruction, neither
            code.replaceSubrange(jump + 1..<jump + 5, with: withUnsafeBytes(of: Int32(target - jump - 5).littleEndian, Array.init))
        }
        let one = Self.run(Repository.nacl, code, base: 0x20000, threads: 1)
        let many = Self.run(Repository.nacl, code, base: 0x20000, threads: threads)
        #expect(one.1.count > 10 && one.1.allSatisfy { $0.kind == .badJumpTarget })
        #expect(many.0 == one.0)
        let difference = Self.firstDifference(many.1, one.1)
        #expect(difference == nil, "the lists differ from finding \(difference ?? 0) on")
    }

    /// The bad jumps the core reports (its second look, at the branches the pass marked): the rel32 jumps whose target
    /// its jump-target map does not hold, each once, in order; and that map holds only instruction starts of the Swift
    /// decoder's (so a jump sent between instructions is always reported).
    @Test func badJumpsAreTheJumpsThatMissTheMap() throws {
        var code = try Self.module(copies: 2), starts: [Int] = [], jumps: [Int] = [], at = 0
        while at < code.count, case .instruction(let i) = Decoder.shared.decode(code, at: at) {
            starts.append(at)
            if i.length == 5 && code[at] == 0xE9 { jumps.append(at) }
            at += i.length
        }
        var random = SplitMix(seed: 0xBAD), targets: [Int] = []
        for jump in jumps {
            let start = starts[random.below(starts.count)], target = random.next() % 2 == 0 ? start : start + 1
            code.replaceSubrange(jump + 1..<jump + 5, with: withUnsafeBytes(of: Int32(target - jump - 5).littleEndian, Array.init))
            targets.append(target)
        }
        let run = CallerMemoryTests.run(code, base: 0x20000, maps: false)
        func lands(_ k: Int) -> Bool { run.targets[k / 8] >> (k % 8) & 1 == 1 }
        let isStart = Set(starts)
        #expect((0..<code.count).allSatisfy { !lands($0) || isStart.contains($0) }, "the map holds instruction starts only")
        let expected = jumps.indices.filter { !lands(targets[$0]) }.map { jumps[$0] }
        #expect(run.findings.allSatisfy { $0.kind == .badJumpTarget })
        #expect(run.findings.map(\.offset) == expected)
        #expect(jumps.indices.filter { !isStart.contains(targets[$0]) }.count > 100, "jumps between instructions")
    }

    /// The generated C API (sieve_split, sieve_verify_piece, sieve_judge_piece, sieve_join) reports what sieve_verify
    /// reports, in its order, on refused code cut into eight pieces, half of them judged by the caller (last first),
    /// the others by the join.
    @Test func generatedPiecesAgreeWithSieveVerify() throws {
        let pieces = CVerifierHarness.driver.replacingOccurrences(
            of: "printf(\" #%zu\\n\", sieve_verify(code, size, base, report, NULL));",
            with: """
            { sieve_piece piece[8]; size_t n = sieve_split(size, base, piece, 8), k;
              for (k = 0; k < n; k++) sieve_verify_piece(code, size, base, &piece[k]);
              for (k = 0; k < n; k += 2) sieve_judge_piece(code, size, base, piece, n, n - 1 - k);
              printf(" #%zu\\n", sieve_join(code, size, base, piece, n, report, NULL)); }
            """)
        #expect(pieces != CVerifierHarness.driver)
        let compiled = CompiledPolicy(try Repository.policy("nacl.yaml"))
        var inputs: [(code: [UInt8], base: UInt64)] = []
        var random = SplitMix(seed: 99)
        for round in 0..<4 {
            var code = try Self.module(copies: 2)
            for _ in 0..<(round * 500) { code[Int(random.next() % UInt64(code.count))] = UInt8(truncatingIfNeeded: random.next()) }
            inputs.append((code, 0x20000))
        }
        let whole = try CVerifierHarness.run(try CVerifierHarness.build(compiled), inputs)
        let split = try CVerifierHarness.run(try CVerifierHarness.build(compiled, driver: pieces), inputs)
        #expect(whole.count == 4 && whole.last!.count > 1000)
        #expect(split == whole)
    }

    /// More findings in a piece than it keeps (SIEVE_PIECE_FINDINGS): every bundle sixteen short jumps, each into the
    /// middle of the next. The join verifies the module whole: the same findings, in the same order, as one thread.
    @Test func aPieceWithMoreFindingsThanItKeepsIsVerifiedWhole() {
        let code: [UInt8] = (0..<256 * 1024).map { $0 % 2 == 0 ? 0xEB : 0x01 }
        let one = Self.run(Repository.nacl, code, base: 0x20000, threads: 1)
        let four = Self.run(Repository.nacl, code, base: 0x20000, threads: 4)
        #expect(one.1.count == code.count / 2 && one.1.allSatisfy { $0.kind == .badJumpTarget })
        #expect(four.0 == one.0)
        #expect(Self.firstDifference(four.1, one.1) == nil)
    }

    /// The C API's pieces are the caller's: pieces that do not tile the module, a piece not verified, a piece past
    /// the code or none at all are refused (one invalid finding), never a module accepted with code unverified.
    @Test func piecesThatAreNotTheModulesAreRefused() throws {
        let code = try Self.module(copies: 8)
        func join(_ change: (inout [sieve_piece]) -> Void, verify: (Int) -> Bool = { _ in true }) -> [FindingKind] {
            code.withUnsafeBytes { bytes in
                Repository.nacl.collect(bytes, base: 0x20000) { tables, report, context in
                    let start = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    var pieces = [sieve_piece](repeating: sieve_piece(), count: 4)
                    let n = sieve_core_split(tables, code.count, 0x20000, &pieces, 4)
                    change(&pieces)
                    for k in pieces.indices where verify(k) { sieve_core_verify_piece(tables, start, code.count, 0x20000, &pieces[k]) }
                    #expect(n == 4)
                    return sieve_core_join(tables, start, code.count, 0x20000, &pieces, pieces.count, report, context)
                }.findings.map(\.kind)
            }
        }
        let invalid: [FindingKind] = [.invalid]
        #expect(join { _ in }.isEmpty, "the split's own pieces: accepted")
        #expect(join { $0[1].from += 32 } == invalid, "a bundle in no piece")
        #expect(join { $0[2].to -= 32 } == invalid, "a bundle in no piece")
        #expect(join { $0[3].to += 32 } == invalid, "a piece past the code")
        #expect(join { $0[1].from = $0[1].to + 32 } == invalid, "a piece that ends before it starts")
        #expect(join({ _ in }, verify: { $0 != 2 }) == invalid, "a piece not verified")
        #expect(join { $0.removeLast(4) } == invalid, "no piece")
    }

    /// The C API's four pieces of `code` (verified on `verified`, those in `judged` judged on it, the others by the join,
    /// on `code`), and one pass over `code`.
    static func pieces(_ code: [UInt8], verified: [UInt8]? = nil, judged: Set<Int> = []) -> (joined: [Finding], whole: [Finding], bounds: [Int]) {
        var bounds: [Int] = []
        let joined = code.withUnsafeBytes { bytes in
            (verified ?? code).withUnsafeBytes { checked in
                Repository.nacl.collect(bytes, base: 0x20000) { tables, report, context in
                    var pieces = [sieve_piece](repeating: sieve_piece(), count: 4)
                    let n = sieve_core_split(tables, code.count, 0x20000, &pieces, 4)
                    let start = checked.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    for k in 0..<n { sieve_core_verify_piece(tables, start, code.count, 0x20000, &pieces[k]) }
                    for k in judged.sorted() where k < n { sieve_core_judge_piece(tables, start, code.count, 0x20000, &pieces, n, k) }
                    bounds = pieces.prefix(n).map(\.from)
                    return sieve_core_join(tables, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), code.count, 0x20000, &pieces, n, report, context)
                }.findings
            }
        }
        return (joined, Self.run(Repository.nacl, code, base: 0x20000, threads: 1).1, bounds)
    }

    /// A piece refuses the instruction that starts a bundle (an invalid byte), and a direct jump in another piece lands
    /// there: the join judges that jump on the pieces' maps and reports it, as one pass does.
    @Test func aJumpIntoABundleAnotherPieceRefusesIsReported() throws {
        var code = try Self.module(copies: 4), jumps: [Int] = [], at = 0
        while at < code.count, case .instruction(let i) = Decoder.shared.decode(code, at: at) {
            if i.length == 5 && code[at] == 0xE9 { jumps.append(at) }
            at += i.length
        }
        let jump = try #require(jumps.first), target = code.count - 64 * 1024 + 32 * 7   // first piece -> last piece, a bundle start
        code.replaceSubrange(jump + 1..<jump + 5, with: withUnsafeBytes(of: Int32(target - jump - 5).littleEndian, Array.init))
        code[target] = 0x06   // invalid in 64-bit mode
        let run = Self.pieces(code)
        #expect(run.bounds.count == 4 && run.bounds[1] > jump && run.bounds[3] < target)
        #expect(run.whole.contains { $0.kind == .badJumpTarget && $0.offset == jump })
        #expect(Self.firstDifference(run.joined, run.whole) == nil)
    }

    /// Where pieces refuse code away from their ends, the join reports what the pieces found and judges the jumps on
    /// their maps: it does not verify the module again. Seen by joining on other bytes than the pieces verified (a
    /// misuse: the join trusts its pieces): an instruction made invalid after the pieces ran is not reported.
    @Test func refusedCodeAwayFromPieceEndsIsNotVerifiedAgain() throws {
        var code = try Self.module(copies: 4)
        /// The first bundle start from `at` on whose instruction is no branch (a branch's target would change too).
        func plainBundleStart(from at: Int) -> Int {
            var at = (at + 31) & ~31
            while [0xE8, 0xE9, 0xEB, 0x0F].contains(code[at]) || code[at] & 0xF0 == 0x70 { at += 32 }
            return at
        }
        code[plainBundleStart(from: 100_000)] = 0x06   // invalid in 64-bit mode
        var changed = code
        let second = plainBundleStart(from: 400_000)
        changed[second] = 0x06
        let run = Self.pieces(changed, verified: code)
        let pieces = Self.pieces(code)
        #expect(Self.firstDifference(pieces.joined, pieces.whole) == nil)
        #expect(run.joined.map(\.offset) == pieces.whole.map(\.offset), "the pieces' findings, not those of a second pass")
        #expect(Self.run(Repository.nacl, changed, base: 0x20000, threads: 1).1.contains { $0.offset == second })
    }

    /// Each piece's jumps are judged once: by the caller's thread (sieve_core_judge_piece) or, for the pieces no thread
    /// judged, by the join. Seen by judging on other bytes than the join gets (a misuse): a jump retargeted into the
    /// middle of an instruction after the pieces were judged is not reported, one retargeted in a piece left to the
    /// join is. (Refused code in piece 2: every jump is judged on the module.)
    @Test func eachPieceIsJudgedOnceByTheCallerOrTheJoin() throws {
        do {
            var code = try Self.module(copies: 4), jumps: [Int] = [], at = 0
            while at < code.count, case .instruction(let i) = Decoder.shared.decode(code, at: at) {
                if i.length == 5 && code[at] == 0xE9 { jumps.append(at) }
                at += i.length
            }
            code[(code.count / 2 + 31) & ~31] = 0x06   // invalid in 64-bit mode, a bundle start in piece 2
            let bounds = Self.pieces(code).bounds
            let first = try #require(jumps.first { $0 < bounds[1] - 64 }), last = try #require(jumps.last { $0 > bounds[3] })
            var changed = code
            for jump in [first, last] {   // one byte further: into the middle of the instruction it reached
                let offset = Int32(littleEndian: changed[jump + 1..<jump + 5].withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }) + 1
                changed.replaceSubrange(jump + 1..<jump + 5, with: withUnsafeBytes(of: offset.littleEndian, Array.init))
            }
            let whole = Self.run(Repository.nacl, changed, base: 0x20000, threads: 1).1
            #expect(whole.contains { $0.kind == .badJumpTarget && $0.offset == first } && whole.contains { $0.kind == .badJumpTarget && $0.offset == last })
            let run = Self.pieces(changed, verified: code, judged: [0, 1, 2])   // piece 3 left to the join
            let jumpsFound = run.joined.filter { $0.kind == .badJumpTarget }.map(\.offset)
            #expect(jumpsFound == whole.filter { $0.kind == .badJumpTarget && $0.offset != first }.map(\.offset),
                    "piece 0 judged on the bytes it was verified on, piece 3 by the join")
            #expect(Self.firstDifference(Self.pieces(changed, judged: [1, 3]).joined, whole) == nil)
        }
    }

    /// An instruction that crosses a piece's end (a call two bytes before it): the piece sees it cut short, so the
    /// join verifies the module whole, and the findings are one pass's.
    @Test func anInstructionAcrossAPieceEndIsJudgedOnTheModule() throws {
        var code = try Self.module(copies: 4)
        let end = try #require(Self.pieces(code).bounds.dropFirst().first)
        code.replaceSubrange(end - 2..<end + 3, with: [0xE8, 0x10, 0x20, 0x00, 0x00])
        let run = Self.pieces(code)
        #expect(run.whole.contains { $0.offset <= end - 2 && $0.offset + $0.length > end - 2 })
        #expect(Self.firstDifference(run.joined, run.whole) == nil)
    }

    /// A base that is not bundle-aligned, and model none, are verified in one piece (the verdict
    /// depends on more than the bundle): still the same.
    @Test func unalignedBaseAndModelNoneStayWhole() throws {
        let code = try Self.module(copies: 2)
        for verifier in [Repository.nacl, Verifier(CompiledPolicy(try Repository.policy("nacl.yaml"), model: SandboxSettings.Model.none))] {
            for base: UInt64 in [0x20000, 0x20001] {
                let one = Self.run(verifier, code, base: base, threads: 1), four = Self.run(verifier, code, base: base, threads: 4)
                #expect(four.0 == one.0)
                #expect(Self.firstDifference(four.1, one.1) == nil)
            }
        }
    }
}
