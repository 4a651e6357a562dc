import X86

/// A set of database forms, one bit per form index.
struct FormSet: Hashable, Sendable {
    private(set) var words: [UInt64]

    init(count: Int, full: Bool = false) {
        words = [UInt64](repeating: full ? ~0 : 0, count: (count + 63) / 64)
        if full, count % 64 != 0 { words[words.count - 1] = (1 << UInt64(count % 64)) - 1 }
    }

    func contains(_ index: Int) -> Bool { words[index / 64] & (1 << UInt64(index % 64)) != 0 }

    mutating func insert(_ index: Int) { words[index / 64] |= 1 << UInt64(index % 64) }

    var isEmpty: Bool { words.allSatisfy { $0 == 0 } }

    var count: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    mutating func formUnion(_ other: FormSet) {
        for w in words.indices { words[w] |= other.words[w] }
    }

    mutating func formIntersection(_ other: FormSet) {
        for w in words.indices { words[w] &= other.words[w] }
    }

    mutating func subtract(_ other: FormSet) {
        for w in words.indices { words[w] &= ~other.words[w] }
    }

    /// The lowest index in both sets, if any.
    func firstShared(with other: FormSet) -> Int? {
        for w in words.indices {
            let both = words[w] & other.words[w]
            if both != 0 { return w * 64 + both.trailingZeroBitCount }
        }
        return nil
    }

    /// Calls `body` with every index in the set, in increasing order.
    func forEach(_ body: (Int) -> Void) {
        for w in words.indices {
            var word = words[w]
            while word != 0 {
                body(w * 64 + word.trailingZeroBitCount)
                word &= word - 1
            }
        }
    }

    func filter(_ keep: (Int) -> Bool) -> FormSet {
        var out = self
        forEach { if !keep($0) { out.words[$0 / 64] &= ~(1 << UInt64($0 % 64)) } }
        return out
    }
}

/// Computes the forms a selector selects at form level without looking at every form: one
/// index per field (mnemonic, op-code, extension, class, encoding, group) turns each field into
/// a set, and the selector is their intersection. `Selector.matchesForm` stays the definition;
/// a test checks that the two agree on every rule of the shipped profiles.
///
/// This is what keeps resolution linear in the policy's size: a selector costs its values, not
/// the database's forms, and rules with the same selector are matched once.
struct SelectorSets {
    let database: ISADatabase
    let groups: GroupCatalog
    let formCount: Int
    private var byMnemonic: [String: [Int]] = [:]
    private var byID: [String: Int] = [:]
    private var byOpcode: [String: [Int]] = [:]
    private var byExtension: [String: FormSet] = [:]
    private var byEncoding: [String: FormSet] = [:]
    private var byClass: [String: FormSet] = [:]
    private var byGroup: [String: FormSet] = [:]
    /// User groups' forms, defined in dependency order (`PolicyLoader.analyzeGroups`).
    private(set) var userMembers: [String: FormSet]

    init(_ groups: GroupCatalog, _ database: ISADatabase) {
        self.database = database
        self.groups = groups
        formCount = database.forms.count
        userMembers = groups.userMembers
        for form in database.forms {
            byMnemonic[form.mnemonic, default: []].append(form.index)
            byID[form.id] = form.index
            byOpcode[OpcodeString.normalized(form.opcodeString), default: []].append(form.index)
            for feature in form.cpuid { byExtension[feature, default: FormSet(count: formCount)].insert(form.index) }
            byEncoding[form.encoding.rawValue, default: FormSet(count: formCount)].insert(form.index)
        }
    }

    /// The forms `selector` selects at form level (instance fields only exclude forms that can
    /// never carry them, as `matchesForm` does).
    mutating func forms(_ s: Selector) -> FormSet {
        var result: FormSet?
        func narrow(_ set: FormSet) {
            if result == nil { result = set } else { result!.formIntersection(set) }
        }
        func listed(_ values: Set<String>?, _ index: [String: [Int]]) {
            guard let values else { return }
            var set = FormSet(count: formCount)
            for value in values { for i in index[value] ?? [] { set.insert(i) } }
            narrow(set)
        }
        listed(s.mnemonics, byMnemonic)
        if let ids = s.forms {
            var set = FormSet(count: formCount)
            for id in ids { if let i = byID[id] { set.insert(i) } }
            narrow(set)
        }
        listed(s.opcodes, byOpcode)
        if let names = s.extensions { narrow(union(names.map { byExtension[$0] })) }
        if let names = s.encodings { narrow(union(names.map { byEncoding[$0] })) }
        if let names = s.classes { narrow(union(names.map { classSet($0) })) }
        if let names = s.groups { narrow(union(names.map { groupSet($0, trusting: s.trusting) })) }
        var out = result ?? FormSet(count: formCount, full: true)
        if s.vectorLengths != nil || s.operands != nil || s.registers != nil {
            out = out.filter { s.matchesForm(database.forms[$0], groups: groups, checkingGroups: false) }
        }
        return out
    }

    mutating func defineUserGroup(_ name: String, _ members: FormSet) { userMembers[name] = members }

    private func union(_ sets: [FormSet?]) -> FormSet {
        var out = FormSet(count: formCount)
        for case let set? in sets { out.formUnion(set) }
        return out
    }

    private mutating func classSet(_ name: String) -> FormSet {
        if let set = byClass[name] { return set }
        var set = FormSet(count: formCount)
        for form in database.forms where FormClassNames.has(form, name) { set.insert(form.index) }
        byClass[name] = set
        return set
    }

    /// A group's forms (a user group's computed once per policy).
    private mutating func groupSet(_ name: String, trusting: Bool) -> FormSet {
        if let set = userMembers[name] { return set }
        let key = (trusting ? "+" : "-") + name
        if let set = byGroup[key] { return set }
        var set = FormSet(count: formCount)
        for (index, member) in groups.members(name, trusting: trusting, in: database).enumerated() where member { set.insert(index) }
        byGroup[key] = set
        return set
    }
}

/// Which rules select which forms (at form level), computed once per resolution and shared by
/// the resolver and the lint. Rules with the same selector (a policy may repeat one a hundred
/// thousand times) share one set.
struct RuleMatches {
    let formCount: Int
    /// Each rule's entry in `sets`.
    let setOfRule: [Int]
    /// The distinct selectors' form sets.
    let sets: [FormSet]

    init(_ rules: [Rule], _ groups: GroupCatalog, _ database: ISADatabase) {
        formCount = database.forms.count
        var index = SelectorSets(groups, database)
        var seen: [Selector: Int] = [:]
        var sets: [FormSet] = []
        setOfRule = rules.map { rule in
            let key = rule.selector.matchKey
            if let k = seen[key] { return k }
            seen[key] = sets.count
            sets.append(index.forms(rule.selector))
            return sets.count - 1
        }
        self.sets = sets
    }

    func forms(rule: Int) -> FormSet { sets[setOfRule[rule]] }

    func matches(rule: Int, form: Int) -> Bool { forms(rule: rule).contains(form) }

    func isEmpty(rule: Int) -> Bool { forms(rule: rule).isEmpty }

    /// The first form both rules select, if any.
    func firstShared(_ a: Int, _ b: Int) -> Int? { forms(rule: a).firstShared(with: forms(rule: b)) }
}
