import Analysis
import ArgumentParser
import Verifier

struct MapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "map",
        abstract: "Draw a policy's opcode map as an SVG picture.",
        discussion: """
            One 16×16 grid per opcode map (legacy one-byte, 0F, 0F 38, 0F 3A and 3DNow!; VEX 0F, \
            0F 38, 0F 3A; EVEX 0F, 0F 38, 0F 3A, map 5, map 6; XOP 8, 9, A), one cell per opcode \
            byte, coloured by what the policy and its sandbox model decide for the forms there: \
            accepted (all of them), partly accepted (some, or instance rules decide), refused \
            (none), invalid (no form decodes there), or a legacy prefix or escape byte. A cell \
            shows its first accepted mnemonic; its tooltip lists every form with its outcome.

            With --against OTHER, cells are coloured by the change from OTHER to POLICY: newly \
            accepted, newly refused, changed in part, or unchanged. The output is deterministic: \
            the same policies give the same bytes.

            FILE.svg is replaced whole or not at all (written to a temporary file beside it, \
            synced, renamed over it; a symbolic link is followed and kept).

            Exit status: 0 written, 2 error (FILE.svg untouched).
            """)

    @Option(name: .shortAndLong, help: "The policy file.")
    var policy: String

    @Option(help: ArgumentHelp("Colour by the change from this policy to POLICY.", valueName: "OTHER"))
    var against: String?

    @Option(name: .shortAndLong, help: ArgumentHelp("The SVG file to write (replaced).", valueName: "FILE.svg"))
    var output: String

    func run() throws {
        let compiled = CompiledPolicy(try loadPolicy(policy))
        let other = try against.map { CompiledPolicy(try loadPolicy($0)) }
        let picture = OpcodeMapPicture(compiled, against: other)
        try failing { try AtomicFile.write(picture.svg(), to: output) }
        let counts = picture.shades.map { "\(picture.count($0)) \($0.name)" }.joined(separator: ", ")
        var out = StandardOutput()
        print("wrote \(output): \(picture.title), \(picture.grids.count) grids of 256 cells: \(counts)", to: &out)
        out.flush()
    }
}
