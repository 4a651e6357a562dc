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
        let edited = try PolicyEdit.appendingBan(to: source, selector: [("mnemonic", ["clflush"])], reason: "Rowhammer \"flush\"",
                                                 refs: ["CVE-2015-0565"])
        #expect(edited == """
            sieve: 1
            name: lab   # our lab profile
            extends: standard
            ban:
              # timers first
              - mnemonic: rdtsc
                reason: timing
              - mnemonic: "clflush"
                reason: "Rowhammer \\"flush\\""
                refs: ["CVE-2015-0565"]
            # allow list follows
            allow:
              - mnemonic: lfence

            """)
    }

    @Test func addsABanListWhenThereIsNone() throws {
        let edited = try PolicyEdit.appendingBan(to: "sieve: 1\nname: t\ntrust: [base]\n",
                                                 selector: [("mnemonic", ["movsb"]), ("prefix", ["rex"])], reason: "Reptar", refs: [])
        #expect(edited == "sieve: 1\nname: t\ntrust: [base]\nban:\n  - mnemonic: \"movsb\"\n    prefix: \"rex\"\n    reason: \"Reptar\"\n")
        let empty = try PolicyEdit.appendingBan(to: "sieve: 1\nname: t\nban: []\n", selector: [("class", ["tsx"])], reason: "TAA", refs: [])
        #expect(empty == "sieve: 1\nname: t\nban:\n  - class: \"tsx\"\n    reason: \"TAA\"\n")
    }

    @Test func selectorFieldsFromTheCommandLine() throws {
        #expect(try PolicyEdit.selectorField("clflush") == ("mnemonic", ["clflush"]))
        #expect(try PolicyEdit.selectorField("class=non-temporal") == ("class", ["non-temporal"]))
        #expect(try PolicyEdit.selectorField("mnemonic=clflush, clflushopt") == ("mnemonic", ["clflush", "clflushopt"]))
        #expect(throws: PolicyEdit.Failure.self) { try PolicyEdit.selectorField("reason=x") }
        #expect(throws: PolicyEdit.Failure.self) { try PolicyEdit.selectorField("mnemonic=") }
        let list = try PolicyEdit.appendingBan(to: "sieve: 1\nname: t\n", selector: [("mnemonic", ["clflush", "clflushopt"])],
                                               reason: "r", refs: ["A", "B"])
        #expect(list.hasSuffix("ban:\n  - mnemonic: [\"clflush\", \"clflushopt\"]\n    reason: \"r\"\n    refs: [\"A\", \"B\"]\n"))
    }

    /// A value is one quoted scalar whatever it holds: it parses back as given and adds no key.
    @Test func hostileValuesStayOneScalar() throws {
        let hostile = "a\nb: c # d {e} \"f\" 'g' \\ \r\u{1}\u{2028}"
        let edited = try PolicyEdit.appendingBan(to: "sieve: 1\nname: t\nban:\n  - mnemonic: rdtsc\n    reason: r\n",
                                                 selector: [("mnemonic", [hostile]), ("register", [hostile, "x:y"])],
                                                 reason: hostile, refs: [hostile])
        guard case .mapping(let top, _)? = try YAMLReader.parse(Array(edited.utf8)),
              case .sequence(let bans, _)? = top.first(where: { $0.key.scalar == "ban" })?.value,
              case .mapping(let fields, _)? = bans.last else {
            Issue.record("no ban list in \(edited)")
            return
        }
        #expect(bans.count == 2)
        #expect(fields.map { $0.key.scalar } == ["mnemonic", "register", "reason", "refs"])
        #expect(fields[0].value.scalar == hostile && fields[2].value.scalar == hostile)
        guard case .sequence(let registers, _) = fields[1].value else { Issue.record("register is not a list"); return }
        #expect(registers.map(\.scalar) == [hostile, "x:y"])
    }

    /// A CRLF file stays CRLF (and one without a final line break gets one of its own kind).
    @Test func lineEndingsStay() throws {
        let crlf = try PolicyEdit.appendingBan(to: "sieve: 1\r\nname: t\r\nban:\r\n  - mnemonic: rdtsc\r\n    reason: r\r\nallow: []\r\n",
                                               selector: [("mnemonic", ["clflush"])], reason: "x", refs: [])
        #expect(crlf == "sieve: 1\r\nname: t\r\nban:\r\n  - mnemonic: rdtsc\r\n    reason: r\r\n  - mnemonic: \"clflush\"\r\n    reason: \"x\"\r\nallow: []\r\n")
        let unterminated = try PolicyEdit.appendingBan(to: "sieve: 1\r\nname: t", selector: [("mnemonic", ["clflush"])], reason: "x", refs: [])
        #expect(unterminated == "sieve: 1\r\nname: t\r\nban:\r\n  - mnemonic: \"clflush\"\r\n    reason: \"x\"\r\n")
    }

    /// A line break libyaml counts and a split at LF does not (a lone CR in a quoted scalar) moves
    /// the insertion point into the next list: before the check, the ban landed in `allow:` (an
    /// allow of what was to be banned). The after-the-fact check refuses the edit instead.
    @Test func anEditThatLandsElsewhereIsRefused() {
        let source = "sieve: 1\nname: t\ndescription: \"a\rb\"\nban:\n  - mnemonic: rdtsc\n    reason: r\nallow:\n  - mnemonic: nop\n"
        #expect(throws: PolicyEdit.Failure.self) {
            try PolicyEdit.appendingBan(to: source, selector: [("mnemonic", ["clflush"])], reason: "x", refs: [])
        }
    }

    /// The diff is a unified diff with context whose hunk counts add up.
    @Test func diffHunkCounts() {
        let a = "1\n2\n3\n4\n5\n", b = "1\n2\n3\n4\nx\ny\n5\n"
        #expect(PolicyEdit.diff(a, b, path: "p.yaml") == "--- ./p.yaml\n+++ ./p.yaml\n@@ -2,4 +2,6 @@\n 2\n 3\n 4\n+x\n+y\n 5\n")
        #expect(PolicyEdit.diff("a", "a\nb\n", path: "/abs/p.yaml")
                == "--- /abs/p.yaml\n+++ /abs/p.yaml\n@@ -1,1 +1,2 @@\n-a\n\\ No newline at end of file\n+a\n+b\n")
        #expect(PolicyEdit.diff("", "x\n", path: "p") == "--- ./p\n+++ ./p\n@@ -0,0 +1,1 @@\n+x\n")
        #expect(PolicyEdit.diff(a, a, path: "p") == "")
    }

    @Test func flowListsAreRefusedNotMangled() {
        #expect(throws: PolicyEdit.Failure.self) {
            try PolicyEdit.appendingBan(to: "sieve: 1\nname: t\nban: [{mnemonic: rdtsc, reason: r}]\n", selector: [("mnemonic", ["x"])], reason: "r", refs: [])
        }
    }
}
