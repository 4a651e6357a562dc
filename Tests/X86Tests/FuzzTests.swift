import Testing
@testable import X86

/// Random and mutated buffers through the decoder. Tests build in debug mode, where every
/// read of an `UnsafeRawBufferPointer` is bounds-checked: a read past the buffer traps. Each
/// buffer is an exact-size array, so the decoder has no slack to read into unnoticed.
@Suite struct FuzzTests {
    /// A small deterministic generator (SplitMix64): the same buffers on every run.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let prefixes: [UInt8] = [0x66, 0x67, 0xF2, 0xF3, 0xF0, 0x2E, 0x3E, 0x26, 0x36, 0x64, 0x65, 0x40, 0x41, 0x48, 0x4F]
    static let escapes: [[UInt8]] = [[0x0F], [0x0F, 0x38], [0x0F, 0x3A], [0x0F, 0x0F], [0xC4], [0xC5], [0x62], [0x8F]]

    /// Properties every decode must have; returns a description of the first one broken.
    static func check(_ bytes: [UInt8], _ decoder: Decoder) -> String? {
        let result = decoder.decode(bytes)
        guard case .instruction(let insn) = result else {
            if case .invalid(.truncated) = result, bytes.count >= 15 { return "truncated with 15 bytes available" }
            return nil
        }
        guard (1...15).contains(insn.length), insn.length <= bytes.count else { return "length \(insn.length)" }
        for (offset, size) in [(insn.modrmOffset, 1), (insn.sibOffset, 1), (insn.displacementOffset, Int(insn.displacementSize)),
                               (insn.immediateOffset, Int(insn.immediateSize))] where offset != 0 {
            if Int(offset) + size > insn.length { return "a field past the instruction's end" }
        }
        // The verdict depends on the instruction's own bytes only.
        if decoder.decode(Array(bytes[0..<insn.length])) != result { return "depends on bytes past its end" }
        return nil
    }

    @Test func randomBuffers() {
        var rng = SplitMix(state: 1)
        let decoder = Decoder.shared
        var failures: [String] = []
        for _ in 0..<1_000_000 {
            var bytes = (0..<Int.random(in: 1...16, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Bias towards the interesting parts of the encoding space.
            if Bool.random(using: &rng) { bytes.insert(contentsOf: Self.escapes.randomElement(using: &rng)!, at: 0) }
            if Int.random(in: 0..<4, using: &rng) == 0 { bytes.insert(Self.prefixes.randomElement(using: &rng)!, at: 0) }
            if let failure = Self.check(bytes, decoder) { failures.append("\(Hex.string(bytes)): \(failure)") }
        }
        #expect(failures.isEmpty, "\(failures.count):\n\(failures.prefix(20).joined(separator: "\n"))")
    }

    @Test func mutatedSamples() {
        var rng = SplitMix(state: 2)
        let decoder = Decoder.shared
        var failures: [String] = []
        var decoded = 0
        var lengths = [Int](repeating: 0, count: 16)
        for form in ISADatabase.shared.forms {
            for _ in 0..<150 {
                var bytes = form.sample
                switch Int.random(in: 0..<6, using: &rng) {
                case 5:
                    let padding = (0..<Int.random(in: 1...14, using: &rng)).map { _ in Self.prefixes.randomElement(using: &rng)! }
                    bytes.insert(contentsOf: padding, at: 0)
                case 0: bytes[Int.random(in: 0..<bytes.count, using: &rng)] = .random(in: 0...255, using: &rng)
                case 1: bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= 1 << UInt8.random(in: 0..<8, using: &rng)
                case 2: bytes.insert(Self.prefixes.randomElement(using: &rng)!, at: 0)
                case 3: bytes.removeLast(Int.random(in: 0..<bytes.count, using: &rng))
                default: bytes += (0..<Int.random(in: 1...8, using: &rng)).map { _ in .random(in: 0...255, using: &rng) }
                }
                if let failure = Self.check(bytes, decoder) { failures.append("\(form.id) \(Hex.string(bytes)): \(failure)") }
                if case .instruction(let insn) = decoder.decode(bytes) { lengths[insn.length] += 1 }
                decoded += 1
            }
        }
        #expect(decoded > 600_000)
        #expect(lengths[1...15].allSatisfy { $0 > 0 }, "every length 1-15 occurs: \(lengths)")
        #expect(failures.isEmpty, "\(failures.count):\n\(failures.prefix(20).joined(separator: "\n"))")
    }

    /// A linear sweep over random bytes at every offset reaches the end without a trap.
    @Test func sweepsOverRandomBytes() {
        var rng = SplitMix(state: 3)
        let code = (0..<1 << 20).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var offset = 0, instructions = 0
        code.withUnsafeBytes { buffer in
            while offset < buffer.count {
                switch Decoder.shared.decode(buffer, at: offset) {
                case .instruction(let insn): offset += insn.length; instructions += 1
                case .invalid: offset += 1
                }
            }
        }
        #expect(offset == code.count)
        #expect(instructions > 100_000)
    }
}
