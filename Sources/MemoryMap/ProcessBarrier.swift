import Glibc
import Threading

/// A barrier shared between processes (Python `multiprocessing.Barrier`): `parties`
/// threads, in any processes, wait for each other; then all continue, each with a distinct
/// index in `0..<parties` (in arrival order, as Python's), and the barrier is ready for the
/// next round. Pass it to child processes as an argument (it encodes as its name).
///
/// Code does not travel between processes, so the action is a name: register its body with
/// `ProcessBarrier.registerAction` in the program (every child is the same program, so the
/// name means the same there). The last party to arrive runs it, in whichever process that
/// is, before any party continues; if it throws, or that process has no such action, the
/// barrier breaks and that party gets the error.
public final class ProcessBarrier: SharedByName, @unchecked Sendable {
    private let memory: SharedMemory
    private let mutex: SharedMutex
    private let changed: SharedCondition
    /// Python `b.parties`.
    public let parties: Int
    /// The registered action run when a round fills, if any.
    public let action: String?
    private let defaultTimeout: Double?

    private enum Phase: Int { case filling, draining, resetting, broken }

    private struct State {
        var count: Int
        var phase: Int
        var waiters: Int
    }

    private static let stateOffset = SharedHeader.size + SharedMutex.size + SharedCondition.size
    private static let settingsOffset = stateOffset + 64
    private static let maxActionName = 64
    private static let size = settingsOffset + 16 + maxActionName
    private var state: UnsafeMutablePointer<State> { (memory.baseAddress + ProcessBarrier.stateOffset).assumingMemoryBound(to: State.self) }

    /// Python `multiprocessing.Barrier(parties, action=None, timeout=None)`, with the action
    /// by its registered name. `timeout` is the default for `wait`.
    public init(parties: Int, action: String? = nil, timeout: Double? = nil) throws(MemoryMapError) {
        guard parties >= 1 else { throw MemoryMapError(.invalidArgument, "a Barrier needs at least 1 party, got \(parties)") }
        guard (action?.utf8.count ?? 0) <= ProcessBarrier.maxActionName else {
            throw MemoryMapError(.invalidArgument, "a barrier action's name is at most \(ProcessBarrier.maxActionName) bytes")
        }
        memory = try SharedMemory(creating: ProcessBarrier.size)
        mutex = SharedMutex(pointer: memory.baseAddress + SharedHeader.size)
        changed = SharedCondition(pointer: memory.baseAddress + SharedHeader.size + SharedMutex.size)
        try mutex.initialize(recursive: false)
        try changed.initialize()
        self.parties = parties
        self.action = action
        self.defaultTimeout = timeout
        state.pointee = State(count: 0, phase: Phase.filling.rawValue, waiters: 0)
        let settings = memory.baseAddress + ProcessBarrier.settingsOffset
        settings.storeBytes(of: (timeout ?? -1).bitPattern, as: UInt64.self)
        let name = Array((action ?? "").utf8)
        settings.storeBytes(of: UInt64(name.count), toByteOffset: 8, as: UInt64.self)
        for (offset, byte) in name.enumerated() { settings.storeBytes(of: byte, toByteOffset: 16 + offset, as: UInt8.self) }
        SharedHeader.write(memory, kind: SharedKind.barrier, detail: UInt64(parties))
    }

    /// Opens the barrier named `name`.
    public init(opening name: String) throws(MemoryMapError) {
        memory = try SharedMemory(opening: name)
        parties = Int(try SharedHeader.check(memory, kind: SharedKind.barrier, what: "Barrier"))
        mutex = SharedMutex(pointer: memory.baseAddress + SharedHeader.size)
        changed = SharedCondition(pointer: memory.baseAddress + SharedHeader.size + SharedMutex.size)
        let settings = memory.baseAddress + ProcessBarrier.settingsOffset
        let timeout = Double(bitPattern: settings.load(as: UInt64.self))
        defaultTimeout = timeout < 0 ? nil : timeout
        let length = min(Int(settings.load(fromByteOffset: 8, as: UInt64.self)), ProcessBarrier.maxActionName)
        let bytes = (0..<length).map { settings.load(fromByteOffset: 16 + $0, as: UInt8.self) }
        action = length == 0 ? nil : String(decoding: bytes, as: UTF8.self)
    }

    public var name: String { memory.name }

    // MARK: Actions

    private static let actionsLock = Threading.Lock()
    nonisolated(unsafe) private static var actions: [String: @Sendable () throws -> Void] = [:]

    /// Registers the body of the barrier action `name` in this program. Register before any
    /// barrier that names it can fill (early in `main`, next to `ChildProcess.register`).
    public static func registerAction(_ name: String, _ body: @escaping @Sendable () throws -> Void) {
        actionsLock.withLock { actions[name] = body }
    }

    // MARK: Waiting

    /// Python `b.wait(timeout=None)`: this party's index in `0..<parties`. Throws
    /// `BrokenBarrierError` when the barrier is or becomes broken (abort, reset, a timeout,
    /// a failing action); the party that ran a failing action gets the action's error.
    @discardableResult
    public func wait(timeout: Double? = nil) throws -> Int {
        let deadline = monotonicDeadline(timeout ?? defaultTimeout)
        mutex.lockForState()
        defer { try? mutex.unlock() }
        // Wait for the previous round to drain or a reset to finish.
        while phase == .draining || phase == .resetting { sleep(until: 0) }
        if phase == .broken { throw BrokenBarrierError() }
        let index = state.pointee.count
        state.pointee.count += 1
        defer {
            state.pointee.count -= 1
            if state.pointee.count == 0, phase == .resetting || phase == .draining { set(.filling) }
        }
        if index + 1 == parties {
            try release()
        } else {
            while phase == .filling {
                if !sleep(until: deadline), phase == .filling {
                    set(.broken)
                    throw BrokenBarrierError()
                }
            }
            if phase == .broken || phase == .resetting { throw BrokenBarrierError() }
        }
        return index
    }

    /// Python `b.reset()`: back to the empty, unbroken state; parties waiting now get
    /// `BrokenBarrierError`.
    public func reset() {
        mutex.lockForState()
        defer { try? mutex.unlock() }
        if state.pointee.count > 0 {
            if phase == .filling || phase == .broken { set(.resetting) }
        } else {
            set(.filling)
        }
    }

    /// Python `b.abort()`: breaks the barrier until `reset()`.
    public func abort() {
        mutex.lockForState()
        defer { try? mutex.unlock() }
        set(.broken)
    }

    /// Python `b.broken`.
    public var isBroken: Bool { locked { phase == .broken } }

    /// Python `b.n_waiting`: the parties waiting in the current round.
    public var nWaiting: Int { locked { phase == .filling ? state.pointee.count : 0 } }

    // With the mutex held: the last party runs the action and lets the round go.
    private func release() throws {
        do {
            if let action {
                guard let body = ProcessBarrier.actionsLock.withLock({ ProcessBarrier.actions[action] }) else {
                    throw MemoryMapError(
                        .unknownEntryPoint, "no barrier action '\(action)' is registered in this process; call ProcessBarrier.registerAction in every program that waits on it")
                }
                try body()
            }
            set(.draining)
        } catch {
            set(.broken)
            throw error
        }
    }

    private var phase: Phase { Phase(rawValue: state.pointee.phase) ?? .broken }

    private func set(_ phase: Phase) {
        state.pointee.phase = phase.rawValue
        if state.pointee.waiters > 0 { changed.broadcast() }
    }

    /// Sleeps (mutex held) until the state changes or the deadline (0: none); false at the deadline.
    @discardableResult
    private func sleep(until deadline: UInt64) -> Bool {
        state.pointee.waiters += 1
        defer { state.pointee.waiters -= 1 }
        return changed.wait(mutex, deadline: deadline)
    }

    private func locked<Result>(_ body: () -> Result) -> Result {
        mutex.lockForState()
        defer { try? mutex.unlock() }
        return body()
    }

}
