import Testing
@testable import Threading

/// A generous bound for waits that should succeed; only a broken primitive reaches it.
let patience = 10.0

/// Starts `body` on a new Colony thread.
@discardableResult
func spawn(name: String? = nil, _ body: @escaping @Sendable () throws -> Void) throws -> Thread {
    let thread = Thread(name: name, target: body)
    try thread.start()
    return thread
}

/// Joins every thread, failing the test if one does not end in time.
func joinAll(_ threads: [Thread], sourceLocation: SourceLocation = #_sourceLocation) throws {
    for thread in threads {
        #expect(try thread.join(timeout: patience), "thread \(thread.name) did not finish", sourceLocation: sourceLocation)
    }
}

/// A counter threads can bump safely, to check invariants after a stress run.
final class Counter: @unchecked Sendable {
    private let lock = Lock()
    private var storage = 0
    func add(_ n: Int = 1) { lock.withLock { storage += n } }
    var value: Int { lock.withLock { storage } }
}

/// A list threads can append to safely.
final class Recorder<Element: Sendable>: @unchecked Sendable {
    private let lock = Lock()
    private var storage: [Element] = []
    func append(_ element: Element) { lock.withLock { storage.append(element) } }
    var values: [Element] { lock.withLock { storage } }
}
