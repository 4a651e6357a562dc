import CCapstone
import X86

/// capstone (4.0.2 on Debian 12) as a source of operand text, and as an oracle in tests.
///
/// Not Sendable: one handle per thread. capstone formats every instruction it decodes,
/// so it is used for human-readable output, never in the verifier's hot path.
public final class Capstone {
    private var handle: csh = 0
    private let insn: UnsafeMutablePointer<cs_insn>

    public struct Text: Equatable, Sendable {
        public let mnemonic: String
        public let operands: String
        public let length: Int

        public var rendered: String { operands.isEmpty ? mnemonic : "\(mnemonic) \(operands)" }
    }

    public init() {
        guard cs_open(CS_ARCH_X86, CS_MODE_64, &handle) == CS_ERR_OK else {
            fatalError("capstone: cs_open failed")
        }
        insn = cs_malloc(handle)
    }

    deinit {
        cs_free(insn, 1)
        cs_close(&handle)
    }

    /// capstone's reading of the instruction at the start of `bytes`, if it decodes one.
    public func decode(_ bytes: UnsafeRawBufferPointer, address: UInt64 = 0) -> Text? {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return nil }
        var code: UnsafePointer<UInt8>? = base.assumingMemoryBound(to: UInt8.self)
        var size = bytes.count
        var address = address
        guard cs_disasm_iter(handle, &code, &size, &address, insn) else { return nil }
        let mnemonic = withUnsafeBytes(of: insn.pointee.mnemonic) { Self.string($0) }
        let operands = withUnsafeBytes(of: insn.pointee.op_str) { Self.string($0) }
        return Text(mnemonic: mnemonic, operands: operands, length: Int(insn.pointee.size))
    }

    public func decode(_ bytes: [UInt8], address: UInt64 = 0) -> Text? {
        bytes.withUnsafeBytes { decode($0, address: address) }
    }

    private static func string(_ raw: UnsafeRawBufferPointer) -> String {
        let end = raw.firstIndex(of: 0) ?? raw.count
        return String(decoding: raw[..<end], as: UTF8.self)
    }
}
