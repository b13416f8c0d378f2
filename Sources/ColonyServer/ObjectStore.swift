import Atomics
import ColonyWire
import Threading

/// Every shared object of one manager, with names and reference counts. Plain Swift: tests
/// drive it without any socket.
///
/// Objects live in shards by id, each under its own lock, and every object has its own lock
/// too, so unrelated objects never serialize on one lock. A reference is held by a session
/// (it created, opened or received the object) or by another object (a dict value, a list
/// item). Anonymous objects are freed when the last reference goes; named ones live until
/// `delete`.
public final class ObjectStore: @unchecked Sendable {
    private struct Entry {
        let object: any SharedObject
        let name: String?
        var references: Int
    }

    private final class Shard: @unchecked Sendable {
        let lock = Lock()
        var entries: [UInt64: Entry] = [:]
    }

    private static let shardCount = 64
    private let shards = (0..<ObjectStore.shardCount).map { _ in Shard() }
    private let namesLock = Lock()
    private var names: [String: UInt64] = [:]  // guarded by namesLock
    private let ids: ObjectIDs
    /// Refuses growth once the manager's memory is used up; nil: no budget.
    public let budget: MemoryBudget?
    /// Mutations read, the cycle collector's last check writes.
    private let gate = ReadWriteGate()
    private let collecting = ManagedAtomic<Bool>(false)
    private let cyclesFreed = ManagedAtomic<UInt64>(0)
    private let collections = ManagedAtomic<UInt64>(0)
    /// The most objects this store will hold; creating more is LimitExceeded.
    public let maxObjects: Int
    private let objectCount = ManagedAtomic<Int>(0)
    /// The pools, apart, so the once-a-second pool tick does not walk every object.
    private let poolsLock = Lock()
    private var poolRegistry: [UInt64: (name: String?, pool: SharedPool)] = [:]  // guarded by poolsLock
    /// Where named objects of the kept types record their changes (`persist(to:)`); nil:
    /// nothing is kept.
    public private(set) var journal: Journal?

    /// Ids start at 1 and are not recorded anywhere.
    public init(maxObjects: Int = 1_000_000, budget: MemoryBudget? = nil) {
        self.maxObjects = maxObjects
        self.budget = budget
        ids = ObjectIDs()
    }

    /// Ids never repeat across stores using the same `objectIDFile` (a manager's restarts on
    /// one state directory): the file records how far they may have gone.
    public init(maxObjects: Int = 1_000_000, objectIDFile: String, budget: MemoryBudget? = nil) throws {
        self.maxObjects = maxObjects
        self.budget = budget
        ids = try ObjectIDs(reservationFile: objectIDFile)
    }

    private func shard(_ id: UInt64) -> Shard { shards[Int(id % UInt64(ObjectStore.shardCount))] }

    /// How many objects exist now.
    public var count: Int { objectCount.load(ordering: .relaxed) }

    /// `["new", type, name, options]`: creates or opens an object, with one reference for the
    /// caller.
    public func create(type: ObjectType, name: String?, options: WireValue) throws(RemoteError) -> ObjectRef {
        try gate.reading { () throws(RemoteError) -> ObjectRef in
            if let name {
                // Create-or-open is atomic per name.
                return try namesLock.withLock { () throws(RemoteError) -> ObjectRef in
                    if let id = names[name] { return try takeReference(id, expecting: type, name: name) }
                    let reference = try insert(type: type, name: name, options: options)
                    names[name] = reference.id
                    return reference
                }
            }
            return try insert(type: type, name: nil, options: options)
        }
    }

    /// Makes an object with one reference (none when `restoring` gives its id).
    private func insert(type: ObjectType, name: String?, options: WireValue, restoring: UInt64? = nil) throws(RemoteError) -> ObjectRef {
        if options.mayContainReferences { try checkStorable(options) }
        if let budget {
            // Sized before it is made: a few bytes of options can ask for an Array of 10^8.
            let elements = type == .array && options["items"] == nil ? Int(clamping: options["size"]?.int64Value ?? 0) : 0
            try budget.admitGrowth(elements.multipliedReportingOverflow(by: MemoryLayout<WireValue>.stride).partialValue, for: "a new \(type.name)")
        }
        guard objectCount.wrappingIncrementThenLoad(ordering: .relaxed) <= maxObjects else {
            objectCount.wrappingDecrement(ordering: .relaxed)
            throw RemoteError(.limitExceeded, "the manager holds its maximum of \(maxObjects) objects; release some first")
        }
        var changes = ReferenceChanges()
        let object: any SharedObject
        do {
            object = try ObjectFactory.make(type: type, options: options, changes: &changes, lookup: self.object)
        } catch {
            objectCount.wrappingDecrement(ordering: .relaxed)
            throw error
        }
        let id: UInt64
        do {
            if let restoring { id = restoring } else { id = try ids.take() }
        } catch {
            objectCount.wrappingDecrement(ordering: .relaxed)
            throw error
        }
        if let journal, let name, let kept = object as? any PersistentObject {
            // Recorded before anyone can reach the object, so its creation precedes its changes.
            let created = journal.record(["create", .integer(id), .integer(type.rawValue), .string(name), options])
            kept.journal = ObjectJournal(journal: journal, id: id, type: type, created: created)
        }
        let shard = shard(id)
        shard.lock.withLock { shard.entries[id] = Entry(object: object, name: name, references: restoring == nil ? 1 : 0) }
        if let pool = object as? SharedPool { poolsLock.withLock { poolRegistry[id] = (name, pool) } }
        apply(changes)
        return ObjectRef(type: type, id: id)
    }

    /// How deeply a stored value may nest: the deepest answer wraps a stored value five
    /// levels down (a `batch` holding a `page` of entries), and answers must stay within the
    /// protocol's 64, so that everything stored can be read back through every method.
    static let maxStoredNesting = 59

    /// Refuses a value that nests deeper than `maxStoredNesting` (ValueError), or refers to
    /// an object that does not exist (NoSuchObject) or calls it another type than it is
    /// (WrongType): stored, it would reach whoever reads it as a proxy to the wrong thing.
    func checkStorable(_ value: WireValue, level: Int = 0) throws(RemoteError) {
        let isEmpty = value.arrayValue?.isEmpty ?? value.mapValue?.isEmpty ?? true
        if !isEmpty, level >= ObjectStore.maxStoredNesting {
            throw RemoteError(
                .valueError,
                "values a manager stores nest at most \(ObjectStore.maxStoredNesting) levels, so that every answer holding them stays within the protocol's 64; this one nests deeper")
        }
        switch value {
        case .objectRef(let reference):
            guard let target = object(reference.id) else {
                throw RemoteError(.noSuchObject, "the value refers to object #\(reference.id), which does not exist")
            }
            guard target.type == reference.type else {
                throw RemoteError(.wrongType, "the value calls object #\(reference.id) a \(reference.type.name), but it is a \(target.type.name)")
            }
        case .array(let elements):
            for element in elements where element.mayContainReferences { try checkStorable(element, level: level + 1) }
        case .map(let pairs):
            for pair in pairs {
                if pair.key.mayContainReferences { try checkStorable(pair.key, level: level + 1) }
                if pair.value.mayContainReferences { try checkStorable(pair.value, level: level + 1) }
            }
        default:
            break
        }
    }

    /// The object with this id, if it exists.
    func object(_ id: UInt64) -> (any SharedObject)? {
        let shard = shard(id)
        return shard.lock.withLock { shard.entries[id]?.object }
    }

    /// The named object `name`, if there is one.
    func object(named name: String) -> (any SharedObject)? {
        namesLock.withLock { names[name] }.flatMap(object)
    }

    /// Runs a method; returns its result. References the object adopts or drops are counted.
    public func call(object id: UInt64, method: String, arguments: [WireValue]) throws(RemoteError) -> WireValue {
        let outlet = DiscardingOutlet()
        let context = CallContext(session: 0, requestID: 0, outlet: outlet, mayPark: false)
        switch try call(object: id, method: method, arguments: arguments, context: context).result {
        case .answer(let value): return value
        case .encodedAnswer(let body): return try ManagerSession.decoded(body).get()
        case .parked: throw RemoteError(.internalError, "a call that may not park was parked")
        }
    }

    /// Runs a method for a session. The references inside an immediate answer are retained
    /// for the caller (before the object's own drops apply, so a popped value never dies in
    /// between) and listed in `adopted`; a parked call's answer hands its references over.
    /// `shows` is the last journal record an immediate answer shows, when the object says
    /// (`ReferenceChanges.answerShowsRecord`).
    func call(object id: UInt64, method: String, arguments: [WireValue], context: CallContext) throws(RemoteError)
        -> (result: CallResult, object: any SharedObject, adopted: [UInt64], shows: UInt64?)
    {
        // The object's change and the counts it implies happen together, as the cycle
        // collector sees them.
        try gate.reading { () throws(RemoteError) -> (result: CallResult, object: any SharedObject, adopted: [UInt64], shows: UInt64?) in
            try callInside(object: id, method: method, arguments: arguments, context: context)
        }
    }

    private func callInside(object id: UInt64, method: String, arguments: [WireValue], context: CallContext) throws(RemoteError)
        -> (result: CallResult, object: any SharedObject, adopted: [UInt64], shows: UInt64?)
    {
        guard let object = object(id) else {
            throw RemoteError(.noSuchObject, "object #\(id) does not exist (it was deleted, or its last reference was released)")
        }
        for argument in arguments where argument.mayContainReferences { try checkStorable(argument) }
        if let budget, MemoryBudget.mayGrow(object.type, method) {
            try budget.admitGrowth(growth(of: object, method, arguments, context), for: "\(object.type.name).\(method)()")
        }
        var changes = ReferenceChanges()
        defer { if !changes.isEmpty { apply(changes) } }
        if method == "get_lock", let carrier = object as? LockCarrier {
            let reference = try carrier.sharedLock { () throws(RemoteError) -> UInt64 in
                try insert(type: .rlock, name: nil, options: .null).id
            }
            addReferences([reference])
            return (.answer(.objectRef(ObjectRef(type: .rlock, id: reference))), object, [reference], nil)
        }
        let result = try object.call(method, arguments, context, &changes)
        var adopted: [UInt64] = []
        if case .answer(let value) = result, value.mayContainReferences {
            adopted = value.objectIDs
            addReferences(adopted)
        }
        return (result, object, adopted, changes.answerShowsRecord)
    }

    /// About how much a growing call adds: a list's multiplication its copies, anything
    /// else the request's own size.
    private func growth(of object: any SharedObject, _ method: String, _ arguments: [WireValue], _ context: CallContext) -> Int {
        guard object.type == .list, method == "mul" || method == "imul", let times = arguments.first?.int64Value, times > 1 else {
            return context.requestBytes
        }
        let copies = method == "mul" ? Int(clamping: times) : Int(clamping: times) - 1
        let (bytes, overflow) = (object.size * MemoryLayout<WireValue>.stride).multipliedReportingOverflow(by: copies)
        return overflow ? Int.max : bytes
    }

    /// Runs a change that is not a call (a timeout, a cancel, a session's end giving back its
    /// locks) as calls run: a compaction's snapshot sees it whole or not at all.
    func changing<Result>(_ body: () -> Result) -> Result { gate.reading(body) }

    /// `["attach", id]` (and opening a named object): one more reference to an existing
    /// object, which must have the `expecting` type when one is given.
    func attach(_ id: UInt64) throws(RemoteError) -> ObjectRef {
        try gate.reading { () throws(RemoteError) -> ObjectRef in try takeReference(id, expecting: nil, name: nil) }
    }

    private func takeReference(_ id: UInt64, expecting expected: ObjectType?, name: String?) throws(RemoteError) -> ObjectRef {
        let shard = shard(id)
        let found: ObjectType? = shard.lock.withLock {
            guard var entry = shard.entries[id] else { return nil }
            if let expected, entry.object.type != expected { return entry.object.type }  // no reference taken
            entry.references += 1
            shard.entries[id] = entry
            return entry.object.type
        }
        let what = name.map { "'\($0)'" } ?? "object #\(id)"
        guard let found else { throw RemoteError(.noSuchObject, "\(what) does not exist (any more): it was deleted or its last reference released") }
        if let expected, found != expected { throw RemoteError(.wrongType, "\(what) is a \(found), not a \(expected)") }
        return ObjectRef(type: found, id: id)
    }

    /// Adds references to each id (for example, ids a session received in an answer).
    public func retain(_ ids: [UInt64]) {
        gate.reading { addReferences(ids) }
    }

    private func addReferences(_ ids: [UInt64]) {
        for id in ids {
            let shard = shard(id)
            shard.lock.withLock {
                if shard.entries[id] != nil { shard.entries[id]!.references += 1 }
            }
        }
    }

    /// Drops one reference per id; frees anonymous objects whose count reaches zero, and
    /// then whatever only they referenced.
    public func release(_ ids: [UInt64]) {
        guard !ids.isEmpty else { return }
        gate.reading { dropReferences(ids) }
    }

    private func dropReferences(_ ids: [UInt64]) {
        var pending = ids
        while let id = pending.popLast() {
            let shard = shard(id)
            let freed: (any SharedObject)? = shard.lock.withLock {
                guard var entry = shard.entries[id] else { return nil }
                entry.references -= 1
                if entry.references > 0 || entry.name != nil {
                    shard.entries[id] = entry
                    return nil
                }
                shard.entries[id] = nil
                return entry.object
            }
            if let freed { pending.append(contentsOf: discard(id, freed)) }
        }
    }

    /// `["delete", name]`: removes a named object for everyone.
    public func delete(name: String) -> Bool {
        gate.reading {
            let id: UInt64? = namesLock.withLock { names.removeValue(forKey: name) }
            guard let id else { return false }
            let shard = shard(id)
            let removed: (any SharedObject)? = shard.lock.withLock { shard.entries.removeValue(forKey: id)?.object }
            if let kept = removed as? any PersistentObject, let line = kept.journal { line.journal.record(["delete", .integer(id)]) }
            if let removed { dropReferences(discard(id, removed)) }
            return true
        }
    }

    // MARK: Persistence

    /// Records, from now on, every change to named objects of the kept types in `journal`,
    /// beginning with those restored.
    public func persist(to journal: Journal) {
        precondition(self.journal == nil, "a store records into one journal")
        self.journal = journal
        for shard in shards {
            let entries = shard.lock.withLock { shard.entries }
            for (id, entry) in entries where entry.name != nil {
                guard let kept = entry.object as? any PersistentObject else { continue }
                kept.journal = ObjectJournal(journal: journal, id: id, type: entry.object.type)
            }
        }
    }

    /// The named objects of the kept types and what a snapshot keeps of each, taken with
    /// every mutation paused, so they are one moment's; `atThatMoment` runs before mutations
    /// resume (a journal's cut).
    func keptStates(atThatMoment: () -> Void = {}) -> [(id: UInt64, name: String, type: ObjectType, state: KeptState)] {
        gate.writing {
            var states: [(id: UInt64, name: String, type: ObjectType, state: KeptState)] = []
            for shard in shards {
                let entries = shard.lock.withLock { shard.entries }
                for (id, entry) in entries {
                    guard let name = entry.name, let kept = entry.object as? any PersistentObject else { continue }
                    states.append((id, name, entry.object.type, kept.snapshot()))
                }
            }
            atThatMoment()
            return states.sorted { $0.id < $1.id }
        }
    }

    /// A named object as the journal made it (`restore`).
    func restoreObject(id: UInt64, type: ObjectType, name: String, options: WireValue) throws(RemoteError) {
        guard Persistence.types.contains(type) else { throw RemoteError(.unsupported, "\(type) objects are not kept") }
        guard object(id) == nil else { throw RemoteError(.badRequest, "object #\(id) was created twice") }
        try namesLock.withLock { () throws(RemoteError) in
            if let previous = names[name] {
                // Only a journal cut short of a delete gets here; the later creation wins.
                let shard = shard(previous)
                if let removed = shard.lock.withLock({ shard.entries.removeValue(forKey: previous)?.object }) {
                    dropReferences(discard(previous, removed))
                }
            }
            ids.advance(past: id)
            _ = try insert(type: type, name: name, options: options, restoring: id)
            names[name] = id
        }
    }

    /// Runs `change` on a restored object and counts the references it adopts or drops;
    /// false if the object does not exist.
    func replay(id: UInt64, _ change: (any SharedObject, inout ReferenceChanges) throws(RemoteError) -> Void) throws(RemoteError) -> Bool {
        guard let object = object(id) else { return false }
        var changes = ReferenceChanges()
        defer { apply(changes) }
        try change(object, &changes)
        return true
    }

    /// The name of a named object.
    func name(of id: UInt64) -> String? {
        let shard = shard(id)
        return shard.lock.withLock { shard.entries[id]?.name }
    }

    // MARK: Cycles

    /// Frees anonymous objects that only objects like them reach: a list holding a dict that
    /// holds the list, which reference counting alone never frees (Python's managers do not
    /// either). Returns how many it freed.
    ///
    /// A first pass runs alongside sessions and finds suspects; the second repeats the test
    /// on the suspects alone with mutations paused, so sessions wait only as long as the
    /// garbage takes to check. The test (CPython's): a suspect's references minus those from
    /// other suspects that are still positive come from outside (a session, a named object,
    /// an answer on its way), and what such a suspect reaches is alive.
    @discardableResult
    public func collectCycles() -> Int {
        guard collecting.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return 0 }
        defer { collecting.store(false, ordering: .releasing) }
        collections.wrappingIncrement(ordering: .relaxed)
        var everything: [UInt64] = []
        for shard in shards { everything += shard.lock.withLock { Array(shard.entries.keys) } }
        let suspects = unreachable(among: Set(everything))
        guard !suspects.isEmpty else { return 0 }
        let freed: [(UInt64, any SharedObject)] = gate.writing {
            var freed: [(UInt64, any SharedObject)] = []
            for id in unreachable(among: suspects) {
                let shard = shard(id)
                if let entry = shard.lock.withLock({ shard.entries.removeValue(forKey: id) }) { freed.append((id, entry.object)) }
            }
            var dropped: [UInt64] = []
            for (id, object) in freed { dropped += discard(id, object) }
            dropReferences(dropped)  // those into the garbage find nothing; the rest may free more
            return freed
        }
        cyclesFreed.wrappingIncrement(by: UInt64(freed.count), ordering: .relaxed)
        return freed.count
    }

    /// The anonymous objects of `candidates` that nothing outside `candidates` keeps alive.
    private func unreachable(among candidates: Set<UInt64>) -> Set<UInt64> {
        var outside: [UInt64: Int] = [:]  // references not explained by edges among candidates
        var edges: [UInt64: [UInt64]] = [:]
        var roots: [UInt64] = []
        for id in candidates {
            let shard = shard(id)
            guard let entry = shard.lock.withLock({ shard.entries[id] }) else { continue }
            if entry.name != nil { roots.append(id) }
            outside[id, default: 0] += entry.references
            let targets = entry.object.referencedIDs().filter(candidates.contains)
            if !targets.isEmpty { edges[id] = targets }
        }
        for targets in edges.values {
            for target in targets where outside[target] != nil { outside[target]! -= 1 }
        }
        roots += outside.filter { $0.value > 0 }.keys
        var alive = Set(roots)
        while let id = roots.popLast() {
            for target in edges[id] ?? [] where alive.insert(target).inserted { roots.append(target) }
        }
        return Set(outside.keys).subtracting(alive)
    }

    /// Cycle collections run, and the objects they freed.
    public var cycleStatistics: (collections: UInt64, freed: UInt64) {
        (collections.load(ordering: .relaxed), cyclesFreed.load(ordering: .relaxed))
    }

    private func apply(_ changes: ReferenceChanges) {
        addReferences(changes.adopted)
        dropReferences(changes.dropped)
    }

    /// Every pool object, with its id and name.
    func pools() -> [(id: UInt64, name: String?, pool: SharedPool)] {
        poolsLock.withLock { poolRegistry.map { (id: $0.key, name: $0.value.name, pool: $0.value.pool) } }.sorted { $0.id < $1.id }
    }

    /// An object taken out of its shard: no longer counted or listed as a pool, and
    /// emptied. Returns the references it held, for the caller to drop.
    private func discard(_ id: UInt64, _ object: any SharedObject) -> [UInt64] {
        if object is SharedPool { poolsLock.withLock { _ = poolRegistry.removeValue(forKey: id) } }
        objectCount.wrappingDecrement(ordering: .relaxed)
        return object.removeAll()
    }

    /// Periodic: each pool loses the workers silent past their heartbeat deadline.
    public func tickPools(now: UInt64) {
        for (_, _, pool) in pools() { pool.tick(now: now) }
    }

    /// What `status` reports about pools: workers, queued, running, done, failed, retried.
    public func describePools() -> WireValue {
        .array(pools().map { $0.pool.describe(id: $0.id, name: $0.name) })
    }

    /// What `status` reports about objects: `[{id, type, name, size, refs}]`.
    public func describeObjects() -> WireValue {
        var rows: [(UInt64, WireValue)] = []
        for shard in shards {
            let entries = shard.lock.withLock { shard.entries }
            for (id, entry) in entries { rows.append((id, Self.row(id, entry))) }
        }
        return .array(rows.sorted { $0.0 < $1.0 }.map(\.1))
    }

    /// The objects without a row for each (the dashboard's feed and `/metrics`, read every
    /// second or scrape even when the manager holds a million): the rows of the `rowLimit`
    /// lowest ids, the total, `[{type, count, items, waiting}]` by type, and each named
    /// queue's `{name, size}`.
    public func summarizeObjects(rowLimit: Int) -> (rows: WireValue, total: Int, byType: WireValue, namedQueues: WireValue) {
        var lowest: [(id: UInt64, entry: Entry)] = []  // ascending, at most rowLimit
        var byType: [UInt8: (count: Int, items: Int, waiting: Int)] = [:]
        var queues: [(name: String, size: Int)] = []
        var total = 0
        for shard in shards {
            let entries = shard.lock.withLock { shard.entries }
            for (id, entry) in entries {
                total += 1
                let size = entry.object.size
                var figures = byType[entry.object.type.rawValue, default: (0, 0, 0)]
                figures.count += 1
                figures.items += size
                figures.waiting += entry.object.waiting
                byType[entry.object.type.rawValue] = figures
                if let name = entry.name, entry.object is SharedQueue { queues.append((name, size)) }
                if lowest.count < rowLimit || (lowest.last.map { id < $0.id } ?? false) {
                    let index = lowest.partitioningIndex { $0.id > id }
                    lowest.insert((id, entry), at: index)
                    if lowest.count > rowLimit { lowest.removeLast() }
                }
            }
        }
        let types: [WireValue] = byType.keys.sorted().map { code in
            let figures = byType[code]!
            return [
                "type": .string(ObjectType(rawValue: code).name), "count": .integer(figures.count), "items": .integer(figures.items),
                "waiting": .integer(figures.waiting),
            ]
        }
        return (
            .array(lowest.map { Self.row($0.id, $0.entry) }), total, .array(types),
            .array(queues.sorted { $0.name < $1.name }.map { ["name": .string($0.name), "size": .integer($0.size)] })
        )
    }

    private static func row(_ id: UInt64, _ entry: Entry) -> WireValue {
        [
            "id": .integer(id), "type": .string(entry.object.type.name),
            "name": entry.name.map(WireValue.string) ?? .null, "size": .integer(entry.object.size),
            "waiting": .integer(entry.object.waiting),
            "refs": .integer(entry.references),
        ]
    }
}

extension Array {
    /// The first index whose element satisfies `belongsAfter`, in an array partitioned by it
    /// (all that do not, then all that do): a binary search.
    fileprivate func partitioningIndex(where belongsAfter: (Element) -> Bool) -> Int {
        var (low, high) = (0, count)
        while low < high {
            let middle = (low + high) / 2
            if belongsAfter(self[middle]) { high = middle } else { low = middle + 1 }
        }
        return low
    }
}

/// Builds objects from `new` options (SPEC.md 6.1).
enum ObjectFactory {
    static func make(
        type: ObjectType, options: WireValue, changes: inout ReferenceChanges, lookup: (UInt64) -> (any SharedObject)?
    ) throws(RemoteError) -> any SharedObject {
        guard options == .null || options.mapValue != nil else {
            throw RemoteError(.badRequest, "'new' options must be a map")
        }
        func typeCode() throws(RemoteError) -> TypeCode {
            switch options["typecode"] {
            case nil, .null?: return try TypeCode(nil)
            case .string(let code)?: return try TypeCode(code)
            default: throw RemoteError(.wrongType, "typecode must be a string")
            }
        }
        switch type {
        case .dict:
            guard let pairs = (options["items"] ?? .map([])).mapValue else {
                throw RemoteError(.wrongType, "a dict's items must be a map")
            }
            return SharedDict(items: pairs, changes: &changes)
        case .list:
            guard let items = (options["items"] ?? .array([])).arrayValue else {
                throw RemoteError(.wrongType, "a list's items must be an array")
            }
            return SharedList(items: items, changes: &changes)
        case .set:
            guard let items = (options["items"] ?? .array([])).arrayValue else {
                throw RemoteError(.wrongType, "a set's items must be an array")
            }
            return SharedSet(items: items, changes: &changes)
        case .namespace:
            guard let attributes = (options["attrs"] ?? .map([])).mapValue else {
                throw RemoteError(.wrongType, "a Namespace's attrs must be a map")
            }
            return try SharedNamespace(attributes: attributes, changes: &changes)
        case .value:
            return try SharedValue(typeCode: typeCode(), value: options["value"], changes: &changes)
        case .array:
            let code = try typeCode()
            if let items = options["items"] {
                guard let elements = items.arrayValue else { throw RemoteError(.wrongType, "an Array's items must be an array") }
                return try SharedArray(typeCode: code, items: elements)
            }
            guard let size = options["size"]?.int64Value, size >= 0, size <= 100_000_000 else {
                throw RemoteError(.valueError, "an Array needs items or a size between 0 and 100000000")
            }
            return SharedArray(typeCode: code, zeros: Int(size))
        case .queue, .joinableQueue, .lifoQueue, .priorityQueue:
            let maxSize = try PythonSemantics.optionalInt(options["maxsize"], "maxsize") ?? 0
            return SharedQueue(type: type, maxSize: maxSize)
        case .lock, .rlock:
            return SharedLock(reentrant: type == .rlock)
        case .semaphore, .boundedSemaphore:
            let value = try PythonSemantics.optionalInt(options["value"], "value") ?? 1
            return try SharedSemaphore(bounded: type == .boundedSemaphore, value: value)
        case .condition:
            switch options["lock"] {
            case nil, .null?:
                return SharedCondition(core: LockCore(reentrant: true), lockObject: nil)
            case .objectRef(let reference)?:
                guard let lock = lookup(reference.id) as? SharedLock else {
                    throw RemoteError(.wrongType, "a Condition's lock must be a live shared Lock or RLock")
                }
                changes.adopt(.objectRef(reference))
                return SharedCondition(core: lock.core, lockObject: reference.id)
            case let other?:
                throw RemoteError(.wrongType, "a Condition's lock must be an object reference, not \(other.kindDescription)")
            }
        case .event:
            return SharedEvent()
        case .barrier:
            guard let parties = try PythonSemantics.optionalInt(options["parties"], "parties") else {
                throw RemoteError(.valueError, "a Barrier needs 'parties'")
            }
            let timeout = try timeoutArgument(options["timeout"], "Barrier")
            let hasAction = options["action"]?.boolValue ?? false
            return try SharedBarrier(parties: parties, timeout: timeout, hasAction: hasAction)
        case .pool:
            return try SharedPool.make(options: options)
        default:
            throw RemoteError(.unsupported, "\(type) objects are not served by this manager yet")
        }
    }
}
