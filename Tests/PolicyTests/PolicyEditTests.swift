import Testing
@testable import Policy

@Suite struct PolicyEditTests {
    @Test func appendsToTheBanListKeepingCommentsAndOrder() throws {
        let source = """
            sieve: 1
            name: lab   # our lab profile
            extends: standard
            ban:
              # timers first
              - mnemonic: rdtsc
                reason: timing
            # allow list follows
            allow:
              - mnemonic: lfence

            """
        let edited = try PolicyEdit.appendingBan(to: source, selector: [("mnemonic", "clflush")], reason: "Rowhammer \"flush\"",
                                                 refs: ["CVE-2015-0565"])
        #expect(edited == """
            sieve: 1
            name: lab   # our lab profile
            extends: standard
            ban:
              # timers first
              - mnemonic: rdtsc
                reason: timing
              - mnemonic: clflush
                reason: "Rowhammer \\"flush\\""
                refs: ["CVE-2015-0565"]
            # allow list follows
            allow:
              - mnemonic: lfence

            """)
    }

    @Test func addsABanListWhenThereIsNone() throws {
        let edited = try PolicyEdit.appendingBan(to: "sieve: 1\nname: t\ntrust: [base]\n",
                                                 selector: [("mnemonic", "movsb"), ("prefix", "rex")], reason: "Reptar", refs: [])
        #expect(edited == "sieve: 1\nname: t\ntrust: [base]\nban:\n  - mnemonic: movsb\n    prefix: rex\n    reason: \"Reptar\"\n")
        let empty = try PolicyEdit.appendingBan(to: "sieve: 1\nname: t\nban: []\n", selector: [("class", "tsx")], reason: "TAA", refs: [])
        #expect(empty == "sieve: 1\nname: t\nban:\n  - class: tsx\n    reason: \"TAA\"\n")
    }

    @Test func selectorFieldsFromTheCommandLine() {
        #expect(PolicyEdit.selectorField("clflush") == ("mnemonic", "clflush"))
        #expect(PolicyEdit.selectorField("class=non-temporal") == ("class", "non-temporal"))
        #expect(PolicyEdit.selectorField("mnemonic=clflush,clflushopt") == ("mnemonic", "[clflush, clflushopt]"))
    }

    @Test func flowListsAreRefusedNotMangled() {
        #expect(throws: PolicyEdit.Failure.self) {
            try PolicyEdit.appendingBan(to: "sieve: 1\nname: t\nban: [{mnemonic: rdtsc, reason: r}]\n", selector: [("mnemonic", "x")], reason: "r", refs: [])
        }
    }
}
