import Policy
import Testing
import Verifier
import X86

/// `sieve patch`'s replacements: what the database derives, and where the core puts the NOPs.
@Suite struct RewriteTests {
    static let postRowhammer = CompiledPolicy(try! Repository.policy("nacl-2015.yaml"))

    /// Every re-encoding the database derives for nacl-2015, applied by the core to the form's
    /// sample (model none, so that the sample's operands need no sandboxing): the result is the
    /// twin form with the same operand bytes, padded with NOPs, at the same total length.
    @Test func everyDerivedTwinReencodesTheSample() throws {
        let compiled = CompiledPolicy(Self.postRowhammer.policy, model: SandboxSettings.Model.none)
        let verifier = Verifier(compiled), forms = compiled.database.forms
        let opcodes = compiled.rewrites.filter { $0.action == .opcode }
        #expect(opcodes.count >= 12, "movnti, movntq, movntdq(a), movntps/pd/ss/sd and the VEX forms")
        for rewrite in opcodes {
            let form = forms[rewrite.form], twin = forms[rewrite.to!]
            var code = form.sample + [UInt8](repeating: 0x90, count: 32 - form.sample.count)
            let sites = verifier.patch(&code, base: 0, stubWithHLT: false)
            guard sites.count == 1, case .rewritten(rule: nil) = sites[0].outcome else {
                Issue.record("\(form.id): \(sites)")
                continue
            }
            let new = sites[0].new
            #expect(new.count == form.sample.count)
            let start = new.firstIndex { $0 != 0x90 } ?? 0
            guard case .instruction(let insn) = Decoder.shared.decode(Array(new[start...])) else {
                Issue.record("\(form.id) -> \(Hex.string(new)) does not decode")
                continue
            }
            #expect(insn.formIndex == twin.index, "\(form.id) -> \(forms[insn.formIndex].id), expected \(twin.id)")
            #expect(new[(start + insn.length)...].allSatisfy { $0 == 0x90 } && new[..<start].allSatisfy { $0 == 0x90 })
            // the operand bytes (ModRM onwards) are the sample's
            #expect(Array(new[(start + Int(insn.modrmOffset))..<(start + insn.length)]) == Array(form.sample.suffix(insn.length - Int(insn.modrmOffset))))
        }
    }

    /// NaCl's rule for MOVNTI: with an index register the MOV stays first (right after the
    /// instruction that restricts the index), RIP-relative the NOP goes first (the end, from
    /// which the displacement counts, stays).
    @Test func nopGoesWhereNothingDependsOnIt() throws {
        let verifier = Verifier(Self.postRowhammer)
        // mov %eax,%eax; movnti %rcx,(%r15,%rax,1); movnti %ecx,0x100(%rip); NOPs to the bundle end
        var code: [UInt8] = [0x89, 0xC0, 0x49, 0x0F, 0xC3, 0x0C, 0x07, 0x0F, 0xC3, 0x0D, 0x00, 0x01, 0x00, 0x00]
        code += [UInt8](repeating: 0x90, count: 32 - code.count)
        let sites = verifier.patch(&code, base: 0x20000, stubWithHLT: false)
        #expect(sites.map(\.new) == [[0x49, 0x89, 0x0C, 0x07, 0x90], [0x90, 0x89, 0x0D, 0x00, 0x01, 0x00, 0x00]])
        #expect(verifier.verify(code, base: 0x20000).accepted)
    }

    /// A policy `rewrite` overrides the database, and one whose target the policy refuses in
    /// place is undone (left), never written half-accepted.
    @Test func policyRewritesOverrideAndAreCheckedInPlace() throws {
        let verifier = Verifier(CompiledPolicy(try CVerifierTests.policy("""
            sieve: 1
            name: rewrites
            extends: \(Repository.root)/policies/nacl-2015.yaml
            ban: [{mnemonic: rdtsc, reason: timer}]
            rewrite:
              - {mnemonic: movnti, to: nop, reason: test}
              - {mnemonic: rdtsc, to: rdtscp, reason: "a refused target: nacl-2015 does not trust rdtscp"}
            """)))
        // movnti %ecx,8(%r15); rdtsc; NOPs to the bundle end
        var code: [UInt8] = [0x41, 0x0F, 0xC3, 0x4F, 0x08, 0x0F, 0x31] + [UInt8](repeating: 0x90, count: 25)
        let sites = verifier.patch(&code, base: 0, stubWithHLT: false)
        #expect(sites.count == 2)
        #expect(sites.first?.new == [0x90, 0x90, 0x90, 0x90, 0x90] && sites.first?.outcome == .rewritten(rule: 0))
        #expect(sites.last?.outcome == .left && sites.last?.new == [0x0F, 0x31])
        #expect(Array(code.prefix(7)) == [0x90, 0x90, 0x90, 0x90, 0x90, 0x0F, 0x31])
    }
}
