import Testing
import Verifier
import X86

/// `sanctionedContext` is what lets `explain` say an instruction "needs the code around it":
/// the context it finds must make the core accept the code, and it must find none for
/// instructions that no code makes acceptable.
@Suite struct SanctionedContextTests {
    static let standard = Verifier(CompiledPolicy(try! Repository.policy("standard.yaml")))

    @Test(arguments: [
        "ff e0",             // jmp *%rax: after and $~31,%eax; add %r15,%rax
        "41 ff d3",          // call *%r11
        "41 8b 04 07",       // mov (%r15,%rax),%eax: after a zero-extension of %eax
        "f3 a4",             // rep movsb: after the %rsi and %rdi sandboxing
        "89 c4",             // mov %eax,%esp: before add %r15,%rsp
        "89 c5",             // mov %eax,%ebp: before add %r15,%rbp
        "eb 00", "e9 00 01 00 00", "e8 00 00 00 00",   // direct branches: a target exists
    ])
    func aContextTheCoreAccepts(_ hex: String) throws {
        let bytes = try #require(Hex.bytes(hex))
        #expect(!Self.standard.verify(bytes).accepted, "refused on its own")
        let context = try #require(Self.standard.sanctionedContext(for: bytes))
        let body = context.before + bytes + context.after
        let accepted = (0...(64 - body.count)).contains { offset in
            Self.standard.verify([UInt8](repeating: 0x90, count: offset) + body + [UInt8](repeating: 0x90, count: 64 - offset - body.count)).accepted
        }
        #expect(accepted)
    }

    @Test(arguments: [
        "c3",                // ret: refused by the model whatever surrounds it
        "c9",                // leave
        "48 89 c4",          // mov %rax,%rsp: no sanctioned sequence writes %rsp from a 64-bit register
        "eb ff",             // a jump into its own bytes
        "64 49 8b 07",       // mov %fs:(%r15),%rax: an FS override
        "49 89 c7",          // mov %rax,%r15: the sandbox base, never written
        "8b 00",             // mov (%rax),%eax: a base outside %r15/%rsp/%rbp/%rip
    ])
    func noContextForWhatNoCodeMakesSafe(_ hex: String) throws {
        let bytes = try #require(Hex.bytes(hex))
        #expect(!Self.standard.verify(bytes).accepted)
        #expect(Self.standard.sanctionedContext(for: bytes) == nil)
    }
}
