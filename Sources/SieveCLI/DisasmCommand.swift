import ArgumentParser
import Disassembly
import X86

struct DisasmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disasm",
        abstract: "List machine code as Sieve's strict decoder reads it.",
        discussion: """
            A linear sweep over the executable LOAD segments of an ELF64 file (or over the whole \
            file with --raw). Each line shows the address, the bytes, the form and a rendering \
            (capstone's where it reads the bytes as Sieve does, Sieve's own otherwise).

            Bytes that are not an instruction are listed as invalid and skipped one at a time. An \
            instruction a CPU executes but Sieve refuses (a vendor-dependent encoding, an ignored \
            REX prefix) is listed with the reason.

            --format jsonl prints one JSON object per instruction: integer "offset" (from the start \
            of the segment) and "length", "address", "bytes", and either "mnemonic" and "form" (plus \
            "refused" with the reason) or "invalid": true with the reason.
            """)

    @Argument(help: "An ELF64 x86-64 file, or raw code with --raw.")
    var file: String

    @Flag(help: "Treat the file as raw code.")
    var raw = false

    @Option(help: "With --raw: virtual address of the first byte (hex with 0x, or decimal; default 0).", transform: parseAddress)
    var base: UInt64?

    @Option(help: "Output format: text or jsonl.")
    var format: ListingFormat = .text

    func validate() throws {
        if base != nil && !raw {
            throw ValidationError("--base applies to raw code (--raw): an ELF file's segments carry their own addresses")
        }
    }

    func run() throws {
        let segments = try failing { try CodeInput.segments(of: file, raw: raw, base: base ?? 0) }
        let renderer = Renderer()
        var out = StandardOutput()
        for segment in segments {
            if format == .text {
                print("\(file): \(segment.name) at 0x\(String(segment.virtualAddress, radix: 16)), \(segment.bytes.count) bytes", to: &out)
            }
            segment.bytes.withUnsafeBytes { code in
                var offset = 0
                while offset < code.count {
                    let address = segment.virtualAddress &+ UInt64(offset)
                    switch renderer.decoder.decode(code, at: offset) {
                    case .instruction(let insn):
                        let bytes = UnsafeRawBufferPointer(rebasing: code[offset..<offset + insn.length])
                        let form = renderer.decoder.form(of: insn)
                        let text = renderer.render(insn, bytes: bytes, address: address).text
                        if format == .jsonl {
                            var fields: [String: JSON] = [
                                "offset": .int(offset), "length": .int(insn.length), "address": .int(Int(bitPattern: UInt(address))),
                                "bytes": .string(Hex.string(bytes, separator: "")), "mnemonic": .string(form.mnemonic),
                                "form": .string(form.id), "text": .string(text),
                            ]
                            if let refusal = insn.refusal { fields["refused"] = .string(refusal.rawValue) }
                            print(JSON.object(fields).compact, to: &out)
                        } else {
                            let note = insn.refusal.map { "    ; refused: \($0.rawValue)" } ?? ""
                            print(Self.line(address, bytes, form.id, text + note), to: &out)
                        }
                        offset += insn.length
                    case .invalid(let reason):
                        let bytes = UnsafeRawBufferPointer(rebasing: code[offset..<offset + 1])
                        if format == .jsonl {
                            print(JSON.object([
                                "offset": .int(offset), "length": .int(1), "address": .int(Int(bitPattern: UInt(address))),
                                "bytes": .string(Hex.string(bytes, separator: "")), "invalid": .bool(true),
                                "reason": .string(reason.rawValue),
                            ]).compact, to: &out)
                        } else {
                            print(Self.line(address, bytes, "(invalid)", reason.rawValue), to: &out)
                        }
                        offset += 1
                    }
                }
            }
        }
        out.flush()
    }

    private static func line(_ address: UInt64, _ bytes: UnsafeRawBufferPointer, _ form: String, _ text: String) -> String {
        let hex = Hex.string(bytes)
        let hexColumn = hex.count < 30 ? hex + String(repeating: " ", count: 30 - hex.count) : hex + " "
        let formColumn = form.count < 36 ? form + String(repeating: " ", count: 36 - form.count) : form + " "
        let addr = String(address, radix: 16)
        return String(repeating: " ", count: max(0, 10 - addr.count)) + addr + ":  " + hexColumn + formColumn + text
    }
}

/// `0x` hex or decimal.
func parseAddress(_ text: String) throws -> UInt64 {
    let value = text.lowercased().hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
    guard let value else { throw ValidationError("'\(text)' is not an address (0x hex or decimal)") }
    return value
}

/// The code a command works on: an ELF file's executable segments, or a raw file.
enum CodeInput {
    static func segments(of path: String, raw: Bool, base: UInt64) throws -> [CodeSegment] {
        try segments(of: path, bytes: readFile(path), raw: raw, base: base)
    }

    /// The same, for a file already read (`bytes`, `path` naming it in errors).
    static func segments(of path: String, bytes: [UInt8], raw: Bool, base: UInt64) throws -> [CodeSegment] {
        if raw {
            // The core adds offsets to the base: code whose addresses wrap would be judged at two.
            guard !base.addingReportingOverflow(UInt64(bytes.count)).overflow else {
                throw InputError("\(path): --base 0x\(String(base, radix: 16)) + \(bytes.count) bytes of code wraps past 2^64")
            }
            return [CodeSegment(name: "raw", fileOffset: 0, virtualAddress: base, bytes: bytes)]
        }
        guard ELF.isELF(bytes) else {
            throw InputError("\(path) is not an ELF file (use --raw for raw code)")
        }
        do {
            let segments = try ELF.executableSegments(bytes)
            if segments.isEmpty { throw InputError("\(path) has no executable LOAD segment") }
            return segments
        } catch let error as ELFError {
            throw InputError("\(path): \(error.message)")
        }
    }
}
