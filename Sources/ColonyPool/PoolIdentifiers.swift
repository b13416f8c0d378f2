/// A job: one `submit` (a single call) or one `map` (many calls) of one client.
public struct PoolJobID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "job \(rawValue)" }
}

/// One chunk of calls handed to one worker; the task-assign frame's request id.
public struct PoolAssignmentID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "assignment \(rawValue)" }
}

/// A worker node connected to the pool (the manager uses its session id).
public struct PoolWorkerID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "worker \(rawValue)" }
}

/// Who submitted a job (the manager uses the client's session id): the unit that
/// `close`, `join`, `terminate` and a lost connection act on.
public struct PoolClientID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "client \(rawValue)" }
}

/// A first-in, first-out queue over an array with a moving head: amortized O(1) at both
/// ends without a dependency.
struct FIFO<Element> {
    private var items: [Element] = []
    private var head = 0

    var isEmpty: Bool { head == items.count }
    var count: Int { items.count - head }
    var first: Element? { isEmpty ? nil : items[head] }

    mutating func append(_ item: Element) { items.append(item) }

    mutating func popFirst() -> Element? {
        guard !isEmpty else { return nil }
        let item = items[head]
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 256 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        return item
    }

    /// Removes and returns the first element that matches, keeping the others in order.
    mutating func removeFirst(where matches: (Element) -> Bool) -> Element? {
        guard let index = items[head...].firstIndex(where: matches) else { return nil }
        if index == head { return popFirst() }
        return items.remove(at: index)
    }

    var elements: ArraySlice<Element> { items[head...] }
}
