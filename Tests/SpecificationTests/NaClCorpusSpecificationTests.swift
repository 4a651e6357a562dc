import Foundation
import Testing
import Specification
import X86  // the ELF reader, in the test only: the specification itself reads raw bytes

enum SharedCorpus {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let nacl = (root as NSString).deletingLastPathComponent + "/shared/corpus/nacl"
}

/// The real Native Client executables: code NaCl's own validator accepted must satisfy the
/// invariant. NaCl's other rules are not the specification's business: a call that does not end a
/// bundle (NaCl's warning about return addresses) and `rep stos`/`rep movs` after the string
/// sequence (the walk is sequential, so it meets a guard page before leaving the sandbox) are fine.
@Suite struct NaClCorpusSpecificationTests {
    @Test(arguments: ["x64_hello_world.nexe", "x64_fib_array_v2.nexe"])
    func realNaClCodeSatisfiesTheInvariant(_ name: String) throws {
        let path = SharedCorpus.nacl + "/" + name
        guard let data = FileManager.default.contents(atPath: path) else {
            Issue.record("missing \(path)")
            return
        }
        let segments = try ELF.executableSegments([UInt8](data))
        #expect(!segments.isEmpty)
        var total = 0
        for segment in segments {
            let found = SandboxSpecification().violations(segment.bytes, base: segment.virtualAddress)
            total += found.count
            let lines = found.prefix(20).map { v -> String in
                let address = segment.virtualAddress + UInt64(v.offset)
                let hex = segment.bytes[v.offset..<min(v.offset + 12, segment.bytes.count)].map { String(format: "%02x", $0) }.joined(separator: " ")
                return "0x\(String(address, radix: 16)) \(v.rule): \(v.message)  [\(hex)]"
            }
            print("\(name) \(segment.name): \(segment.bytes.count) bytes at 0x\(String(segment.virtualAddress, radix: 16)), \(found.count) violations")
            #expect(found.isEmpty, "\(found.count) violations:\n\(lines.joined(separator: "\n"))")
        }
    }
}
