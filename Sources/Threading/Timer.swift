/// Calls a function once, on its own thread, `interval` seconds after `start()`
/// (Python `threading.Timer`). `cancel()` before then stops it.
open class Timer: Thread, @unchecked Sendable {
    /// Python `t.interval`: the delay in seconds.
    public let interval: Double
    /// Python `t.function`: what runs when the delay has passed.
    public let function: @Sendable () throws -> Void
    let cancelled = Event()

    /// Python `Timer(interval, function)`. Arguments are captured by the closure.
    public init(interval: Double, name: String? = nil, function: @escaping @Sendable () throws -> Void) {
        self.interval = interval
        self.function = function
        super.init(name: name, daemon: nil, target: nil)
    }

    /// Python `t.cancel()`: stops the timer if its function has not started yet.
    public func cancel() { cancelled.set() }

    open override func run() throws {
        defer { cancelled.set() }
        if !cancelled.wait(timeout: interval) { try function() }
    }
}

/// The chapter's `Periodic` recipe as a type: calls `function` every `interval` seconds
/// until `cancel()` or until `function` throws (the error then goes to `Thread.excepthook`).
public final class Periodic: Timer, @unchecked Sendable {
    public override func run() throws {
        defer { cancelled.set() }
        while !cancelled.wait(timeout: interval) { try function() }
    }
}
