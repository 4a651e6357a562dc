import ArgumentParser
import Policy
import X86

struct ISACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "isa",
        abstract: "Query the x86-64 instruction database.",
        discussion: """
            Lists the instruction forms matching QUERY, with their op-code strings, extensions \
            (CPUID features) and classes, then the number of forms per extension.

            QUERY matches a form when it equals the form's id, mnemonic, a CPUID feature, a class \
            or the encoding (legacy, vex, evex, xop, 3dnow), or when it occurs in the form's id or \
            instruction text. Case does not matter. With no QUERY, every form is listed.

            Examples:
              sieve isa clflush            the CLFLUSH form
              sieve isa rtm                every TSX/RTM form
              sieve isa nt --format json   non-temporal forms as a JSON array
            """)

    @Argument(help: "A form id, mnemonic, CPUID feature, class or encoding; or part of an id.")
    var query: String?

    @Option(help: "Output format: text or json (a JSON array of form objects).")
    var format: OutputFormat = .text

    @Flag(help: "List the built-in groups and classes a policy can name, with their form counts.")
    var groups = false

    func run() throws {
        if groups { return listGroups() }
        let database = ISADatabase.shared
        let forms = query.map { q in database.forms.filter { Self.matches($0, q.lowercased()) } } ?? database.forms
        var out = StandardOutput()
        switch format {
        case .json:
            print(JSON.array(forms.map(Self.json)).compact, to: &out)
        case .text:
            printTable(forms, to: &out)
        }
        out.flush()
        if forms.isEmpty { throw ExitStatus.findings }
    }

    private func listGroups() {
        let database = ISADatabase.shared
        var out = StandardOutput()
        let groups = GroupCatalog.builtins.map { g in (g.name, g.about, database.forms.filter { g.contains($0) }.count) }
        let classes = FormClassNames.all.map { c in (c.name, c.about, database.forms.filter { FormClassNames.has($0, c.name) }.count) }
        var extensions: [String: Int] = [:]
        for form in database.forms { for f in form.cpuid { extensions[f, default: 0] += 1 } }
        if format == .json {
            func entries(_ list: [(String, String, Int)]) -> JSON {
                .array(list.map { .object(["name": .string($0.0), "about": .string($0.1), "forms": .int($0.2)]) })
            }
            print(JSON.object([
                "groups": entries(groups), "classes": entries(classes),
                "extensions": .object(extensions.mapValues(JSON.int)),
            ]).compact, to: &out)
        } else {
            print("Groups (trust, allow, ban, group:):", to: &out)
            for (name, about, count) in groups { print("  \(name.padding(18)) \(String(count).padding(6)) \(about)", to: &out) }
            print("\nClasses (class:):", to: &out)
            for (name, about, count) in classes { print("  \(name.padding(18)) \(String(count).padding(6)) \(about)", to: &out) }
            print("\nEvery CPUID extension is a group of the same name ('.' may stand for '_': sse4.1):", to: &out)
            for (name, count) in extensions.sorted(by: { $0.key < $1.key }) { print("  \(name.padding(24)) \(count)", to: &out) }
        }
        out.flush()
    }

    static func matches(_ form: Form, _ query: String) -> Bool {
        if form.id == query || form.mnemonic == query || form.encoding.rawValue == query { return true }
        if form.cpuid.contains(query) || form.classes.names.contains(query) || form.flow?.rawValue == query {
            return true
        }
        return form.id.contains(query) || form.instructionString.lowercased().contains(query)
    }

    static func extensionName(_ form: Form) -> String {
        form.cpuid.isEmpty ? "-" : form.cpuid.joined(separator: "+")
    }

    static func classNames(_ form: Form) -> [String] {
        (form.flow.map { [$0.rawValue] } ?? []) + form.classes.names
    }

    static func json(_ form: Form) -> JSON {
        .object([
            "id": .string(form.id),
            "mnemonic": .string(form.mnemonic),
            "extension": .string(extensionName(form)),
            "cpuid": .array(form.cpuid.map(JSON.string)),
            "opcode": .string(form.opcodeString),
            "instruction": .string(form.instructionString),
            "encoding": .string(form.encoding.rawValue),
            "map": .string(form.map.rawValue),
            "classes": .array(classNames(form).map(JSON.string)),
            "vendor": .string(form.vendor.rawValue),
            "sample": .string(Hex.string(form.sample, separator: "")),
        ])
    }

    private func printTable(_ forms: [Form], to out: inout StandardOutput) {
        let idWidth = min(48, forms.map(\.id.count).max() ?? 2)
        let opcodeWidth = min(40, forms.map(\.opcodeString.count).max() ?? 7)
        func pad(_ s: String, _ n: Int) -> String { s.padding(n) }
        print(pad("id", idWidth), pad("mnemonic", 16), pad("op-code", opcodeWidth), pad("extension", 20), "classes", to: &out)
        for form in forms {
            let classes = Self.classNames(form).filter { $0 != "tuple" }
            print(pad(form.id, idWidth), pad(form.mnemonic, 16), pad(form.opcodeString, opcodeWidth),
                  pad(Self.extensionName(form), 20), classes.isEmpty ? "-" : classes.joined(separator: ","), to: &out)
        }
        var perExtension: [String: Int] = [:]
        for form in forms { perExtension[Self.extensionName(form), default: 0] += 1 }
        print("", to: &out)
        print("\(forms.count) form\(forms.count == 1 ? "" : "s") (database: \(ISADatabase.shared.version))", to: &out)
        for (name, count) in perExtension.sorted(by: { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }) {
            print("  \(pad(name, 32)) \(count)", to: &out)
        }
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
