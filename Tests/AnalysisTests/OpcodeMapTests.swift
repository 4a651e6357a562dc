import Analysis
import Foundation
import Policy
import Testing
import Verifier
import X86

#if canImport(FoundationXML)
import FoundationXML
#endif

/// What a test needs from a map's SVG, read back with Foundation's XML parser: the grids, the
/// colour class of every cell and the tooltip of its group.
final class ParsedSVG: NSObject, XMLParserDelegate {
    var error: Error?
    var documentTitle: String?
    var gridIDs: [String] = []
    var rectsPerGrid: [String: Int] = [:]
    var shadeOf: [String: String] = [:]
    var tooltipOf: [String: String] = [:]
    private var open: [String?] = []
    private var grid: String?
    private var text: String?
    private var lastTitle = ""

    init(_ svg: String) {
        super.init()
        let parser = XMLParser(data: Data(svg.utf8))
        parser.delegate = self
        if !parser.parse() { error = parser.parserError ?? CocoaError(.coderReadCorrupt) }
    }

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        let id = attributes["id"]
        open.append(id)
        if name == "g", let id, id.hasPrefix("grid-") {
            grid = id
            gridIDs.append(id)
        }
        if name == "title" { text = "" }
        guard name == "rect" else { return }
        if let grid { rectsPerGrid[grid, default: 0] += 1 }
        if let id {
            shadeOf[id] = attributes["class"]
            tooltipOf[id] = lastTitle
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { text? += string }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        if name == "title", let text {
            if documentTitle == nil { documentTitle = text }
            lastTitle = text
        }
        text = nil
        if let id = open.removeLast(), id == grid { grid = nil }
    }

    func parser(_ parser: XMLParser, parseErrorOccurred parseError: Error) { error = parseError }
}

@Suite struct OpcodeMapTests {
    static let standard = try! TestPolicy.shipped("standard.yaml")
    static let rowhammer = try! TestPolicy.shipped("errata/rowhammer.yaml")

    static let gridIDs = [
        "legacy-1b", "legacy-0f", "legacy-0f38", "legacy-0f3a", "3dnow-0f0f", "vex-0f", "vex-0f38", "vex-0f3a",
        "evex-0f", "evex-0f38", "evex-0f3a", "evex-map5", "evex-map6", "xop-xop8", "xop-xop9", "xop-xopa",
    ]

    @Test func wellFormedWithEveryGridOf256Cells() throws {
        let svg = ParsedSVG(OpcodeMapPicture(Self.standard).svg())
        #expect(svg.error == nil, "\(String(describing: svg.error))")
        #expect(svg.documentTitle == "Opcode map: standard")
        #expect(svg.gridIDs == Self.gridIDs.map { "grid-" + $0 })
        for id in svg.gridIDs { #expect(svg.rectsPerGrid[id] == 256, "\(id)") }
        #expect(svg.shadeOf.count == 256 * Self.gridIDs.count)
    }

    @Test func everyFormIsInAGrid() {
        let picture = OpcodeMapPicture(Self.standard)
        #expect(picture.grids.reduce(0) { $0 + $1.formCount } == ISADatabase.shared.forms.count)
    }

    @Test func knownCellsOfStandard() throws {
        let svg = ParsedSVG(OpcodeMapPicture(Self.standard).svg())
        #expect(svg.shadeOf["legacy-1b-01"] == "accepted")  // ADD r/m, r
        #expect(svg.shadeOf["legacy-0f-ae"] == "partly")  // CLFLUSH and FXSAVE, but not WRFSBASE (the model's)
        #expect(svg.shadeOf["legacy-0f-05"] == "refused")  // SYSCALL: the model refuses it
        #expect(svg.shadeOf["legacy-0f-0b"] == "accepted")  // UD2 is an instruction
        #expect(svg.shadeOf["legacy-0f-04"] == "invalid")
        #expect(svg.shadeOf["legacy-1b-06"] == "invalid")  // PUSH ES, gone in 64-bit mode
        #expect(svg.shadeOf["legacy-1b-66"] == "prefix-escape")
        #expect(svg.shadeOf["legacy-0f-38"] == "prefix-escape")
        let tooltip = try #require(svg.tooltipOf["legacy-0f-ae"])
        #expect(tooltip.hasPrefix("0F AE: partly accepted"))
        #expect(tooltip.contains("clflush_m8 (CLFLUSH m8): accepted"))
        #expect(tooltip.contains("wrfsbase_r64 (WRFSBASE r64): refused by the sandbox model"))
    }

    @Test func paranoidRefusesEveryVectorExtension() throws {
        let svg = ParsedSVG(OpcodeMapPicture(try TestPolicy.shipped("paranoid.yaml")).svg())
        for grid in ["vex-0f", "vex-0f38", "vex-0f3a", "evex-0f", "evex-0f38", "evex-0f3a", "evex-map5", "evex-map6"] {
            let shades = Set((0..<256).compactMap { svg.shadeOf[grid + "-" + String(format: "%02x", $0)] })
            #expect(shades == ["refused", "invalid"], "\(grid): \(shades)")
        }
    }

    @Test func againstColoursTheChange() throws {
        let plain = OpcodeMapPicture(Self.rowhammer).svg()
        let change = OpcodeMapPicture(Self.rowhammer, against: Self.standard).svg()
        #expect(change != plain)
        let svg = ParsedSVG(change)
        #expect(svg.error == nil)
        #expect(svg.documentTitle == "Opcode map: standard + Rowhammer against standard")
        #expect(svg.shadeOf["legacy-0f-ae"] == "changed-partly")  // CLFLUSH, CLFLUSHOPT and CLWB banned, FXSAVE not
        #expect(svg.shadeOf["legacy-0f-c3"] == "newly-refused")  // MOVNTI
        #expect(svg.shadeOf["legacy-1b-01"] == "unchanged-accepted")
        #expect(svg.shadeOf["legacy-0f-05"] == "unchanged-refused")
        #expect(svg.shadeOf["legacy-0f-04"] == "invalid")
        let tooltip = try #require(svg.tooltipOf["legacy-0f-ae"])
        #expect(tooltip.hasPrefix("0F AE: changed in part, 58 forms, 3 changed\n"), "\(tooltip)")
        #expect(tooltip.contains("clflush_m8 (CLFLUSH m8): accepted → refused"))
        #expect(tooltip.contains("fxsave_m512byte (FXSAVE m512byte): accepted\n"))
    }

    @Test func deterministic() throws {
        let first = OpcodeMapPicture(try TestPolicy.shipped("errata/rowhammer.yaml"), against: try TestPolicy.shipped("standard.yaml"))
        let second = OpcodeMapPicture(Self.rowhammer, against: Self.standard)
        #expect(first.svg() == second.svg())
    }

    @Test func escapesThePolicyName() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-map-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("policy.yaml").path
        try "sieve: 1\nname: \"<base> & 'x87' \\\"only\\\"\"\ntrust: [base, x87]\n".write(toFile: path, atomically: true, encoding: .utf8)
        let svg = ParsedSVG(OpcodeMapPicture(CompiledPolicy(try PolicyLoader.load(path))).svg())
        #expect(svg.error == nil, "\(String(describing: svg.error))")
        #expect(svg.documentTitle == "Opcode map: <base> & 'x87' \"only\"")
    }
}
