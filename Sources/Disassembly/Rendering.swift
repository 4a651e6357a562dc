import X86

/// Instruction text for people: capstone's operands where capstone reads the bytes as Sieve
/// does, Sieve's own rendering where capstone fails or disagrees (capstone 4.0.2 calls RDPID
/// "rdseed", TPAUSE "mfence", and misses many EVEX forms).
public struct Renderer {
    private let capstone = Capstone()
    public let decoder: Decoder

    public init(decoder: Decoder = .shared) { self.decoder = decoder }

    public struct Rendering: Equatable, Sendable {
        public let text: String
        /// Whether the text is capstone's (else Sieve's own).
        public let fromCapstone: Bool
    }

    public func render(_ instruction: Instruction, bytes: UnsafeRawBufferPointer, address: UInt64) -> Rendering {
        let form = decoder.form(of: instruction)
        if let text = capstone.decode(bytes, address: address), text.length == instruction.length,
           Self.sameInstruction(capstone: text.mnemonic, sieve: form.mnemonic) {
            return Rendering(text: text.rendered, fromCapstone: true)
        }
        return Rendering(text: own(instruction, form: form, bytes: bytes, address: address), fromCapstone: false)
    }

    /// capstone's mnemonic names the same instruction as the form's (allowing prefixes it
    /// folds into the mnemonic and its spellings of a few aliases).
    static func sameInstruction(capstone: String, sieve: String) -> Bool {
        let words = capstone.split(separator: " ")
        guard let last = words.last else { return false }
        let name = String(last)
        if name == sieve { return true }
        return aliases[sieve]?.contains(name) ?? false
    }

    /// Sieve's (iced-x86's) mnemonic → capstone 4's other spellings of the same instruction.
    private static let aliases: [String: Set<String>] = [
        "retf": ["lret"], "retfq": ["lretq"], "movsd": ["movsl"], "cmpsd": ["cmpsl"], "stosd": ["stosl"],
        "lodsd": ["lodsl"], "scasd": ["scasl"], "insd": ["insl"], "outsd": ["outsl"], "sal": ["shl"],
        "fstp1": ["fstp"], "fstp8": ["fstp"], "fstp9": ["fstp"], "fxch4": ["fxch"], "fxch7": ["fxch"],
        "fcomp3": ["fcomp"], "fcomp5": ["fcomp"], "movq": ["movd"], "vmovq": ["vmovd"],
    ]

    /// Sieve's own text: the mnemonic and, for branches, the target.
    private func own(_ instruction: Instruction, form: Form, bytes: UnsafeRawBufferPointer, address: UInt64) -> String {
        if let target = Self.branchTarget(instruction, form: form, bytes: bytes, address: address) {
            return "\(form.mnemonic) 0x\(String(target, radix: 16))"
        }
        let operands = form.instructionString.split(separator: " ", maxSplits: 1).dropFirst().first.map { " " + $0.lowercased() } ?? ""
        return form.mnemonic + operands
    }

    /// The target of a direct branch, from its displacement.
    public static func branchTarget(_ instruction: Instruction, form: Form, bytes: UnsafeRawBufferPointer, address: UInt64) -> UInt64? {
        guard let rel = form.immediates.first(where: { $0 == .rel8 || $0 == .rel16 || $0 == .rel32 }),
              instruction.immediateSize > 0 else { return nil }
        let at = Int(instruction.immediateOffset)
        let displacement: Int64
        switch rel {
        case .rel8: displacement = Int64(Int8(bitPattern: bytes[at]))
        case .rel16: displacement = Int64(Int16(bitPattern: UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8))
        default:
            var value: UInt32 = 0
            for k in 0..<4 { value |= UInt32(bytes[at + k]) << (8 * k) }
            displacement = Int64(Int32(bitPattern: value))
        }
        return address &+ UInt64(instruction.length) &+ UInt64(bitPattern: displacement)
    }
}
