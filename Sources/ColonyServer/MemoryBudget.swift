import Atomics
import ColonyWire
import Foundation

/// The manager's memory budget (`colony manager --max-memory`, Redis's `maxmemory` with its
/// refusing policy): the manager's resident memory is sampled (ten times a second by the
/// server: stored objects and buffers alike), requests that would grow it are refused with
/// OutOfMemory once it is used up, and requests that would
/// allocate much at once (a large Array, a list multiplied) are sized first and refused if
/// they do not fit. Partial (chunked) messages of all sessions together may take at most a
/// quarter of the budget. Reads, removals and deletions always run, so memory can be freed.
public final class MemoryBudget: PartialMessageBudget, @unchecked Sendable {
    /// The most bytes the manager may hold.
    public let limit: Int
    private let measure: @Sendable () -> Int
    private let sampled = ManagedAtomic<Int>(0)
    /// Growth admitted since the last sample, which it has not seen yet.
    private let unsampled = ManagedAtomic<Int>(0)
    private let partial = ManagedAtomic<Int>(0)
    private let refusals = ManagedAtomic<UInt64>(0)

    /// `measure` reads the memory in use; tests inject their own.
    public init(limit: Int, measure: @escaping @Sendable () -> Int = MemoryBudget.residentMemory) {
        precondition(limit > 0, "a memory budget must be positive")
        self.limit = limit
        self.measure = measure
        sample()
    }

    /// Reads the memory in use again.
    public func sample() {
        sampled.store(measure(), ordering: .relaxed)
        unsampled.store(0, ordering: .relaxed)
    }

    /// Bytes in use, as far as known.
    public var used: Int { sampled.load(ordering: .relaxed) + unsampled.load(ordering: .relaxed) }
    /// Bytes held by partial messages now.
    public var partialBytes: Int { partial.load(ordering: .relaxed) }
    /// Requests refused for memory so far.
    public var refused: UInt64 { refusals.load(ordering: .relaxed) }

    /// Admits work that may grow memory by `bytes` (0 if unknown but small); OutOfMemory
    /// when the budget is used up or has no room for it.
    func admitGrowth(_ bytes: Int, for what: @autoclosure () -> String) throws(RemoteError) {
        let now = used
        guard now < limit, bytes <= limit - now else {
            refusals.wrappingIncrement(ordering: .relaxed)
            let need = bytes >= MemoryBudget.trackedGrowth ? "needs about \(MemoryBudget.describe(bytes))" : "would store more"
            throw RemoteError(
                .outOfMemory,
                "\(what()) \(need), but the manager uses \(MemoryBudget.describe(now)) of its \(MemoryBudget.describe(limit)) budget (--max-memory); free objects, or start the manager with a larger budget")
        }
        if bytes >= MemoryBudget.trackedGrowth { unsampled.wrappingIncrement(by: bytes, ordering: .relaxed) }
    }

    /// Whether `method` of a `type` object may make the manager hold more: refused once the
    /// budget is used up. Reads, removals, answers that are built and sent (copies, unions)
    /// and fixed-size changes (an Array's items, counters, locks) are not.
    static func mayGrow(_ type: ObjectType, _ method: String) -> Bool {
        switch type {
        case .dict: growingDictMethods.contains(method)
        case .list: growingListMethods.contains(method)
        case .set: method == "add" || method == "update" || method == "symmetric_difference_update"
        case .value: method == "set" || method == "cas"
        case .namespace: method == "setattr"
        case .queue, .joinableQueue, .lifoQueue, .priorityQueue: method == "put" || method == "put_many"
        case .pool: method == "submit" || method == "map" || method == "feed"
        default: false
        }
    }

    private static let growingDictMethods: Set<String> = ["setitem", "setdefault", "update", "or", "fromkeys", "cas"]
    private static let growingListMethods: Set<String> = ["setitem", "setslice", "append", "extend", "insert", "add", "mul", "imul"]

    /// Growth smaller than this is left to the next sample (an atomic add per small request
    /// would cost every session on every event loop).
    static let trackedGrowth = 4096

    public func reservePartial(_ bytes: Int) -> Bool {
        let total = partial.wrappingIncrementThenLoad(by: bytes, ordering: .relaxed)
        guard total <= limit / 4, used + bytes <= limit else {
            partial.wrappingDecrement(by: bytes, ordering: .relaxed)
            refusals.wrappingIncrement(ordering: .relaxed)
            return false
        }
        return true
    }

    public func releasePartial(_ bytes: Int) {
        partial.wrappingDecrement(by: bytes, ordering: .relaxed)
    }

    /// What `status` shows: `{used, limit, partial, refused}`.
    var wireValue: WireValue {
        ["used": .integer(used), "limit": .integer(limit), "partial": .integer(partialBytes), "refused": .integer(refused)]
    }

    /// The process's resident memory now (Linux `/proc/self/statm`): what the kernel's OOM
    /// killer weighs, freed memory the allocator keeps included.
    @Sendable public static func residentMemory() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Three quarters of the memory this process may use: the cgroup's limit if one is set,
    /// else the machine's.
    public static func defaultLimit() -> Int {
        let physical = Int(ProcessInfo.processInfo.physicalMemory)
        let cgroup = (try? String(contentsOfFile: "/sys/fs/cgroup/memory.max", encoding: .utf8))
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        return min(physical, cgroup ?? physical) / 4 * 3
    }

    /// "512 MiB", "1.5 GiB".
    static func describe(_ bytes: Int) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) bytes" : String(format: "%.1f %@", value, units[unit])
    }
}
