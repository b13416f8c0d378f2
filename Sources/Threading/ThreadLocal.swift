import Glibc

/// Per-thread storage (Python `threading.local`): each thread sees its own `value`.
///
/// Python's `local` holds any attributes; in Swift, make `Value` a struct with the fields
/// you need. `makeInitial`, when given, supplies a thread's first value the first time that
/// thread reads it (what a Python `local` subclass's `__init__` does).
public final class ThreadLocal<Value>: @unchecked Sendable {
    private final class Box {
        var value: Value
        init(_ value: Value) { self.value = value }
    }

    private var key = pthread_key_t()
    private let makeInitial: (@Sendable () -> Value)?

    public init(makeInitial: (@Sendable () -> Value)? = nil) {
        self.makeInitial = makeInitial
        // Each thread's value is released when that thread ends.
        pthread_key_create(&key) { pointer in
            if let pointer { Unmanaged<AnyObject>.fromOpaque(pointer).release() }
        }
    }

    /// Frees the key. Values that threads still alive had set are released only when
    /// those threads end, so keep a `ThreadLocal` for as long as threads use it.
    deinit {
        if let pointer = pthread_getspecific(key) {
            Unmanaged<AnyObject>.fromOpaque(pointer).release()
        }
        pthread_key_delete(key)
    }

    /// The calling thread's value; nil until this thread sets one (or `makeInitial` is nil).
    public var value: Value? {
        get {
            if let box = box() { return box.value }
            guard let makeInitial else { return nil }
            let initial = makeInitial()
            store(Box(initial))
            return initial
        }
        set {
            if let newValue {
                if let box = box() { box.value = newValue } else { store(Box(newValue)) }
            } else if let pointer = pthread_getspecific(key) {
                pthread_setspecific(key, nil)
                Unmanaged<AnyObject>.fromOpaque(pointer).release()
            }
        }
    }

    private func box() -> Box? {
        guard let pointer = pthread_getspecific(key) else { return nil }
        return Unmanaged<Box>.fromOpaque(pointer).takeUnretainedValue()
    }

    private func store(_ box: Box) {
        pthread_setspecific(key, Unmanaged.passRetained(box as AnyObject).toOpaque())
    }
}
