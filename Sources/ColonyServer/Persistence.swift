import ColonyWire
import Foundation
import Logging
import Threading

/// What a manager with `--persist` keeps across restarts (SPEC 6.9): named dicts, lists,
/// sets, Namespaces, Values, Arrays and queues, with their contents. Sessions, anonymous
/// objects, locks and other synchronization objects, parked calls and pools are not kept.
///
/// Journal records (MessagePack arrays):
/// - `["create", id, type, name, options]`: a named object was made with these options;
/// - `["call", id, method, arguments]`: a method changed it (replayed as called: the
///   methods of these types depend only on the object and the arguments);
/// - `["queue", id, effect, ...]`: what a queue's call did to its items, which depends on
///   the waiters of the moment (`push item`, `pop count`, `handoff`, `done`,
///   `shutdown immediate`);
/// - `["delete", id]`: the named object was deleted.
enum Persistence {
    /// The types whose named objects are kept.
    static let types: Set<ObjectType> = [
        .dict, .list, .set, .namespace, .value, .array, .queue, .joinableQueue, .lifoQueue, .priorityQueue,
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

extension Persistence {
    /// Brings back what the journal at `path` kept into `store`, then records every later
    /// change there. A torn or damaged tail (a crash mid-write) is cut off and saved next to
    /// the journal, and the log says what was dropped.
    static func open(_ path: String, policy: DurabilityPolicy, into store: ObjectStore, logger: Logger) throws {
        let contents = try JournalFile.read(path: path)
        if contents.droppedBytes > 0 {
            let saved = path + ".damaged-\(Int(Date().timeIntervalSince1970))"
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            try bytes.subdata(in: contents.validBytes..<bytes.count).write(to: URL(fileURLWithPath: saved))
            guard truncate(path, off_t(contents.validBytes)) == 0 else { throw JournalError.cannotWrite(path, errno) }
            logger.warning(
                "journal: cut \(contents.droppedBytes) bytes off its end, after \(contents.records.count) valid records: \(contents.damage ?? "damage"); the bytes are saved in \(saved)")
        }
        let report = store.restore(contents.records)
        if !contents.records.isEmpty {
            logger.info(
                "journal: restored \(report.objects) named objects from \(report.records) records",
                metadata: [
                    "skipped": "\(report.skipped)", "references_to_unkept_objects": "\(report.droppedReferences)",
                ])
        }
        store.persist(to: try Journal(path: path, policy: policy))
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

    init(journal: Journal, id: UInt64, type: ObjectType) {
        self.journal = journal
        self.id = id
        self.type = type
    }

    /// A method ran without error: recorded if it may have changed the object.
    func called(_ method: String, _ arguments: [WireValue]) {
        guard Persistence.changes(type, method) else { return }
        journal.record(["call", .integer(id), .string(method), .array(arguments)])
    }

    /// A queue's change: `push item`, `pop count`, `handoff`, `done`, `shutdown immediate`.
    func queue(_ effect: String, _ operand: WireValue = .null) {
        journal.record(["queue", .integer(id), .string(effect), operand])
    }
}

/// An object that can be kept: it records its changes once given a journal line.
protocol PersistentObject: SharedObject {
    /// Set once, before the object is published.
    var journal: ObjectJournal? { get set }
    /// The lock its calls hold.
    var lock: Lock { get }
}

extension PersistentObject {
    /// Runs a call under the object's lock and, if it succeeded, records it before the lock
    /// is let go.
    func recorded(_ method: String, _ values: [WireValue], _ body: () throws(RemoteError) -> WireValue) throws(RemoteError)
        -> WireValue
    {
        try lock.withLock { () throws(RemoteError) -> WireValue in
            let result = try body()
            journal?.called(method, values)
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
                case "queue" where fields.count == 4:
                    guard let effect = fields[2].stringValue else {
                        report.skipped += 1
                        continue
                    }
                    let operand = keepingLiveReferences(fields[3], &report)
                    guard try replay(id: id, { object, changes throws(RemoteError) in
                        guard let queue = object as? SharedQueue else { throw RemoteError(.wrongType, "not a queue") }
                        try queue.replay(effect, operand, &changes)
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
