import Testing

extension HostileInputTests {
    /// An option that would be silently ignored is a usage error.
    @Suite struct IgnoredOptions {
        @Test func disasmBaseWithoutRaw() throws {
            let file = Sieve.corpus.appendingPathComponent("nacl/x64_hello_world.nexe").path
            let result = try Sieve.run("disasm", "--base", "0x1000", file)
            #expect(result.status == 2)
            #expect(result.stderr.contains("--base applies to raw code"))
            #expect(result.stdout.isEmpty)
        }
    }
}
