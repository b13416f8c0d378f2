import Atomics
import ColonyWire
import Foundation
import Logging
import NIOCore
import Threading

extension Persistence {
    /// The types whose named objects are kept.
    static let types: Set<ObjectType> = [
        .dict, .list, .set, .namespace, .value, .array, .queue, .joinableQueue, .lifoQueue, .priorityQueue, .lock, .rlock,
        .semaphore, .boundedSemaphore, .event,
    ]

    /// Whether `method` may change an object of `type` (queues record their effects instead).
    static func changes(_ type: ObjectType, _ method: String) -> Bool {
        switch type {
        case .dict: dictChanges.contains(method)
        case .list: listChanges.contains(method)
        case .set: setChanges.contains(method)
        case .namespace: method == "setattr" || method == "delattr"
        case .value: method == "set" || method == "incr" || method == "cas"
        case .array: method == "setitem" || method == "setslice" || method == "incr"
        default: false
        }
    }

    private static let dictChanges: Set<String> = [
        "setitem", "delitem", "pop", "popitem", "setdefault", "update", "clear", "incr", "cas",
    ]
    private static let listChanges: Set<String> = [
        "setitem", "delitem", "setslice", "delslice", "append", "extend", "insert", "pop", "remove", "reverse", "sort",
        "clear", "imul",
    ]
    private static let setChanges: Set<String> = [
        "add", "discard", "remove", "pop", "clear", "update", "difference_update", "intersection_update",
        "symmetric_difference_update",
    ]
}

/// Where a manager keeps its objects (in its state directory, `--persist`): `snapshot`
/// holds them as of the start of a generation, and `journal.<generation>` the changes
/// from there. A compaction starts the next generation's journal, writes the snapshot of
/// that moment beside the old one and renames it over it, then removes the older journals;
/// a crash at any step leaves a snapshot and the journals after it.
public struct PersistenceFiles: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    public var snapshot: String { directory + "/snapshot" }
    public func journal(_ generation: UInt64) -> String { directory + "/journal.\(generation)" }

    /// The journals in the directory, oldest first.
    func journals() throws -> [(generation: UInt64, path: String)] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        return names.compactMap { name in
            guard name.hasPrefix("journal."), let generation = UInt64(name.dropFirst("journal.".count)) else { return nil }
            return (generation, directory + "/" + name)
        }.sorted { $0.generation < $1.generation }
    }
}

/// What a manager with `--persist` keeps across restarts (SPEC 6.4): named dicts, lists,
/// sets, Namespaces, Values, Arrays and queues with their contents, named Locks, RLocks and
/// Semaphores with their fencing tokens (a lock held when the manager died is free after the
/// restart, a semaphore has its held permits back, and the next holder is told the previous
/// owner died; tokens go on rising), and Events, set or clear. Sessions, anonymous objects,
/// Conditions, Barriers, parked calls and pools are not kept.
///
/// Journal records (MessagePack arrays):
/// - `["create", id, type, name, options]`: a named object was made with these options;
/// - `["call", id, method, arguments]`: a method changed it (replayed as called: the
///   methods of these types depend only on the object and the arguments);
/// - `["effect", id, effect, operand]`: what a call did where that depends on the waiters of
///   the moment: a queue's `push item`, `pop count`, `handoff`, `done`,
///   `shutdown immediate`; a lock's `taken token` and `freed ownerDied`; a semaphore's
///   `state [value, ownerDied, token]` as a restart would leave it; an Event's `set`, `clear`;
/// - `["delete", id]`: the named object was deleted.
///
/// An instance restores the objects at start, then journals their changes and compacts
/// the journal into a snapshot when it has grown.
public final class Persistence: @unchecked Sendable {
    public let files: PersistenceFiles
    let store: ObjectStore
    let journal: Journal
    private let logger: Logger
    /// A compaction runs when the journal is at least this large and at least as large as
    /// the last snapshot (Redis's auto-aof-rewrite-min-size and -percentage 100).
    let compactionBytes: Int
    private let compacting = ManagedAtomic<Bool>(false)
    private let snapshotBytes: ManagedAtomic<Int>
    private let compactions = ManagedAtomic<UInt64>(0)
    /// When the last snapshot was written (uptime nanoseconds).
    private let snapshotTime = ManagedAtomic<UInt64>(DispatchTime.now().uptimeNanoseconds)
    /// What the start brought back.
    public let restored: RestoreReport

    /// Brings back what the directory kept into `store` (which must be empty), writes a
    /// snapshot of it, and records every later change in a new journal. A torn or damaged
    /// journal tail (a crash mid-write) is cut off and saved next to it, and the log says what
    /// was dropped; a damaged snapshot is refused, since serving from it would serve wrong data.
    public init(
        directory: String, policy: DurabilityPolicy, compactionBytes: Int = 64 << 20, journalPollNanoseconds: UInt64 = 0,
        store: ObjectStore, logger: Logger
    ) throws {
        files = PersistenceFiles(directory: directory)
        self.store = store
        self.logger = logger
        self.compactionBytes = compactionBytes
        var records: [WireValue] = []
        var generation: UInt64 = 0
        if FileManager.default.fileExists(atPath: files.snapshot) {
            let snapshot = try JournalFile.read(path: files.snapshot)
            guard snapshot.damage == nil, snapshot.droppedBytes == 0, snapshot.isSnapshot, let begun = snapshot.generation else {
                throw JournalError(
                    description: "the snapshot \(files.snapshot) is damaged (\(snapshot.damage ?? "it does not begin as a snapshot")), so the manager will not serve from it. Restore it from a backup, or move it away to start from the journals alone (what only the snapshot held is then lost)")
            }
            records = snapshot.records
            generation = begun
        }
        var newest = generation
        for (begun, path) in try files.journals() {
            newest = max(newest, begun)
            guard begun >= generation else { continue }  // the snapshot holds it
            let contents = try JournalFile.read(path: path)
            if contents.droppedBytes > 0 { try Persistence.cutDamagedTail(path, contents, logger) }
            records += contents.records
        }
        let report = store.restore(records)
        restored = report
        if !records.isEmpty {
            logger.info(
                "persistence: restored \(report.objects) named objects from \(records.count) records",
                metadata: ["skipped": "\(report.skipped)", "references_to_unkept_objects": "\(report.droppedReferences)"])
        }
        // Start afresh: this moment's snapshot, an empty journal after it.
        let next = newest + 1
        let opened = try JournalFile.open(files.journal(next), generation: next)
        snapshotBytes = ManagedAtomic(try Persistence.writeSnapshot(store.keptStates(), generation: next, to: files))
        try Persistence.removeJournals(before: next, in: files)
        journal = try Journal(file: opened, policy: policy, pollNanoseconds: journalPollNanoseconds)
        store.persist(to: journal)
    }

    /// Whether the journal has grown enough for a compaction.
    var wantsCompaction: Bool {
        let size = journal.statistics.bytes
        return size >= compactionBytes && size >= snapshotBytes.load(ordering: .relaxed)
    }

    /// Writes a snapshot of every kept object and starts a new journal after it, so that the
    /// journal stops growing; mutations pause only while the objects' states are taken (no
    /// copying: their storage is shared until next changed). Runs at most once at a time.
    public func compact() throws {
        guard compacting.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return }
        defer { compacting.store(false, ordering: .releasing) }
        let next = journal.generation + 1
        let opened = try JournalFile.open(files.journal(next), generation: next)
        let states = store.keptStates { journal.rotate(to: opened) }
        let size = try Persistence.writeSnapshot(states, generation: next, to: files)
        journal.awaitRotation()
        try Persistence.removeJournals(before: next, in: files)
        snapshotBytes.store(size, ordering: .relaxed)
        snapshotTime.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
        compactions.wrappingIncrement(ordering: .relaxed)
        logger.debug("persistence: compacted", metadata: ["snapshot_bytes": "\(size)", "generation": "\(next)"])
    }

    /// Compacts if the journal has grown enough; for a periodic timer.
    public func compactIfDue() {
        guard wantsCompaction else { return }
        do {
            try compact()
        } catch {
            logger.error("persistence: cannot compact the journal, which keeps growing: \(error)")
        }
    }

    /// What `status` shows: the journal's figures, the last snapshot's size and age, and the
    /// compactions.
    public var wireValue: WireValue {
        var value = journal.statistics.wireValue
        if case .map(var pairs) = value {
            pairs.append(WirePair("snapshot_bytes", .integer(snapshotBytes.load(ordering: .relaxed))))
            pairs.append(WirePair("compactions", .integer(compactions.load(ordering: .relaxed))))
            let age = DispatchTime.now().uptimeNanoseconds - snapshotTime.load(ordering: .relaxed)
            pairs.append(WirePair("snapshot_age", .double(Double(age) / 1e9)))
            pairs.append(WirePair("journal", .string(journal.path)))
            value = .map(pairs)
        }
        return value
    }

    /// Writes and syncs what is recorded; call when the manager stops.
    public func stop() { journal.stop() }

    /// Saves the invalid end of a journal next to it, cuts it off, and says so in the log.
    private static func cutDamagedTail(_ path: String, _ contents: JournalFile.Contents, _ logger: Logger) throws {
        let saved = path + ".damaged-\(Int(Date().timeIntervalSince1970))"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        try bytes.subdata(in: contents.validBytes..<bytes.count).write(to: URL(fileURLWithPath: saved))
        guard truncate(path, off_t(contents.validBytes)) == 0 else { throw JournalError.cannotWrite(path, errno) }
        logger.warning(
            "persistence: cut \(contents.droppedBytes) bytes off the end of \(path), after \(contents.records.count) valid records: \(contents.damage ?? "damage"); the bytes are saved in \(saved)")
    }

    /// Writes `["snapshot", generation]` and a `create` record (and a queue's effects) per
    /// object to a temporary file, syncs it and renames it over the snapshot. Returns its size.
    static func writeSnapshot(
        _ states: [(id: UInt64, name: String, type: ObjectType, state: KeptState)], generation: UInt64, to files: PersistenceFiles
    ) throws -> Int {
        let temporary = files.snapshot + ".new"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw JournalError.cannotOpen(temporary, errno) }
        defer { close(descriptor) }
        var buffer = ByteBuffer(bytes: Array(JournalFile.magic.utf8))
        var size = 0
        func write(ifAtLeast limit: Int) throws {
            guard buffer.readableBytes >= limit else { return }
            let count = buffer.withUnsafeReadableBytes { Foundation.write(descriptor, $0.baseAddress, $0.count) }
            guard count == buffer.readableBytes else { throw JournalError.cannotWrite(temporary, errno) }
            size += count
            buffer.clear()
        }
        JournalFile.writeRecord(["snapshot", .integer(generation)], into: &buffer)
        for (id, name, type, state) in states {
            JournalFile.writeRecord(["create", .integer(id), .integer(type.rawValue), .string(name), state.options], into: &buffer)
            for (effect, operand) in state.effects {
                JournalFile.writeRecord(["effect", .integer(id), .string(effect), operand], into: &buffer)
            }
            try write(ifAtLeast: 1 << 20)
        }
        try write(ifAtLeast: 1)
        guard fsync(descriptor) == 0, rename(temporary, files.snapshot) == 0 else { throw JournalError.cannotWrite(files.snapshot, errno) }
        try syncDirectory(files.directory)
        return size
    }

    private static func removeJournals(before generation: UInt64, in files: PersistenceFiles) throws {
        for (begun, path) in try files.journals() where begun < generation { unlink(path) }
        try syncDirectory(files.directory)
    }

    /// Makes renames, creations and removals in `directory` durable.
    private static func syncDirectory(_ directory: String) throws {
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw JournalError.cannotOpen(directory, errno) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw JournalError.cannotWrite(directory, errno) }
    }
}

extension JournalStatistics {
    /// What `status` shows: `{mode, bytes, records, syncs, last_sync_ms, failure}`.
    var wireValue: WireValue {
        [
            "mode": .string(policy.rawValue), "bytes": .integer(bytes), "records": .integer(records), "syncs": .integer(syncs),
            "last_sync_ms": .double(Double(lastSyncNanoseconds) / 1e6), "failure": failure.map(WireValue.string) ?? .null,
        ]
    }
}

/// A persisted object's line into the journal. The object calls it while it holds its own
/// lock, so that the journal has its changes in the order it made them.
final class ObjectJournal: Sendable {
    let journal: Journal
    let id: UInt64
    let type: ObjectType
    /// The number of the last record of this object (its creation's, or 0 when that was
    /// kept before this start): what anything read from it now shows at most.
    let lastRecord: ManagedAtomic<UInt64>
    /// Whether answers wait for the disk (`always`), so that what an answer shows is worth
    /// tracking finely.
    var answersWait: Bool { journal.policy == .always }

    init(journal: Journal, id: UInt64, type: ObjectType, created: UInt64 = 0) {
        self.journal = journal
        self.id = id
        self.type = type
        lastRecord = ManagedAtomic(created)
    }

    /// A method ran without error: recorded if it may have changed the object. Returns the
    /// record's number, or nil if nothing was recorded.
    @discardableResult
    func called(_ method: String, _ arguments: [WireValue]) -> UInt64? {
        guard Persistence.changes(type, method) else { return nil }
        return noted(journal.record(["call", .integer(id), .string(method), .array(arguments)]))
    }

    /// A change recorded as its effect (a queue's items, a lock's holder).
    func effect(_ effect: String, _ operand: WireValue = .null) {
        noted(journal.record(["effect", .integer(id), .string(effect), operand]))
    }

    @discardableResult
    private func noted(_ record: UInt64) -> UInt64 {
        lastRecord.store(record, ordering: .relaxed)
        return record
    }
}

/// An object that can be kept: it records its changes once given a journal line.
protocol PersistentObject: SharedObject {
    /// Set once, before the object is published.
    var journal: ObjectJournal? { get set }
    /// The lock its calls hold.
    var lock: Lock { get }
    /// What a snapshot keeps of it now.
    func snapshot() -> KeptState
    /// Redoes a recorded effect, on an object no session uses yet.
    func replay(_ effect: String, _ operand: WireValue, _ changes: inout ReferenceChanges) throws(RemoteError)
}

/// An object's contents as a snapshot keeps them: the options that make it again, and for
/// a queue the effects that fill it.
struct KeptState {
    var options: WireValue
    var effects: [(effect: String, operand: WireValue)] = []
}

extension PersistentObject {
    /// Objects whose changes are all method calls record no effects.
    func replay(_ effect: String, _ operand: WireValue, _ changes: inout ReferenceChanges) throws(RemoteError) {
        throw RemoteError(.badRequest, "a \(type) has no recorded effect '\(effect)'")
    }

    /// Runs a call under the object's lock and, if it succeeded, records it before the lock
    /// is let go. The answer shows the call's own record, or (read under the lock) every
    /// change the object had; `finer`, given the record (nil for a read), may name an
    /// earlier one for what the call really read.
    func recorded(
        _ method: String, _ values: [WireValue], _ changes: inout ReferenceChanges,
        finer: (_ record: UInt64?, _ journal: ObjectJournal) -> UInt64? = { _, _ in nil },
        _ body: (inout ReferenceChanges) throws(RemoteError) -> WireValue
    ) throws(RemoteError) -> WireValue {
        try lock.withLock { () throws(RemoteError) -> WireValue in
            let result = try body(&changes)
            guard let journal else {
                changes.answerShowsRecord = 0  // nothing of it is kept
                return result
            }
            let record = journal.called(method, values)
            changes.answerShowsRecord = finer(record, journal) ?? record ?? journal.lastRecord.load(ordering: .relaxed)
            return result
        }
    }
}

/// What a restart brought back from the journal, for the manager's log.
public struct RestoreReport: Sendable, Equatable {
    /// Named objects rebuilt.
    public var objects = 0
    /// Records applied.
    public var records = 0
    /// References to objects that were not kept (anonymous ones), stored as nil instead.
    public var droppedReferences = 0
    /// Records that could not be applied (their object was deleted, or they fail now).
    public var skipped = 0
}

extension ObjectStore {
    /// Rebuilds the named objects a journal's records describe. Call it on an empty store,
    /// before `persist(to:)` and before serving.
    public func restore(_ records: [WireValue]) -> RestoreReport {
        var report = RestoreReport()
        for record in records {
            guard let fields = record.arrayValue, let kind = fields.first?.stringValue, fields.count >= 2,
                let id = fields[1].uint64Value
            else {
                report.skipped += 1
                continue
            }
            do {
                switch kind {
                case "create" where fields.count == 5:
                    guard let code = fields[2].uint64Value, code <= UInt8.max, let name = fields[3].stringValue else {
                        report.skipped += 1
                        continue
                    }
                    let options = keepingLiveReferences(fields[4], &report)
                    try restoreObject(id: id, type: ObjectType(rawValue: UInt8(code)), name: name, options: options)
                    report.objects += 1
                case "call" where fields.count == 4:
                    guard let method = fields[2].stringValue, let arguments = fields[3].arrayValue else {
                        report.skipped += 1
                        continue
                    }
                    let kept = arguments.map { keepingLiveReferences($0, &report) }
                    guard try replay(id: id, { object, changes throws(RemoteError) in _ = try object.call(method, kept, &changes) }) else {
                        report.skipped += 1
                        continue
                    }
                case "effect" where fields.count == 4:
                    guard let effect = fields[2].stringValue else {
                        report.skipped += 1
                        continue
                    }
                    let operand = keepingLiveReferences(fields[3], &report)
                    guard try replay(id: id, { object, changes throws(RemoteError) in
                        guard let kept = object as? any PersistentObject else { throw RemoteError(.wrongType, "not kept") }
                        try kept.replay(effect, operand, &changes)
                    }) else {
                        report.skipped += 1
                        continue
                    }
                case "delete":
                    guard let name = name(of: id), delete(name: name) else {
                        report.skipped += 1
                        continue
                    }
                default:
                    report.skipped += 1
                    continue
                }
                report.records += 1
            } catch {
                report.skipped += 1
            }
        }
        return report
    }

    /// A value with references to objects that do not exist (anonymous objects, which are
    /// not kept) replaced by nil.
    private func keepingLiveReferences(_ value: WireValue, _ report: inout RestoreReport) -> WireValue {
        guard value.mayContainReferences else { return value }
        switch value {
        case .objectRef(let reference):
            if let target = object(reference.id), target.type == reference.type { return value }
            report.droppedReferences += 1
            return .null
        case .array(let elements):
            return .array(elements.map { keepingLiveReferences($0, &report) })
        case .map(let pairs):
            return .map(pairs.map { WirePair(keepingLiveReferences($0.key, &report), keepingLiveReferences($0.value, &report)) })
        default:
            return value
        }
    }
}
