/// Where a queue keeps its items: a ring buffer for FIFO and LIFO order, a binary heap for
/// priority order. Lives at a fixed address inside its queue and is only touched with the
/// queue's lock held; the queue calls `destroy()` exactly once.
@usableFromInline
struct QueueStorage<Element> {
    @usableFromInline
    enum Order {
        case fifo
        case lifo
        case priority((Element, Element) -> Bool)
    }

    @usableFromInline let order: Order
    @usableFromInline var buffer: UnsafeMutablePointer<Element>
    @usableFromInline var capacity: Int
    @usableFromInline var head = 0  // ring buffer: index of the oldest item
    @usableFromInline var count = 0

    @usableFromInline
    init(order: Order) {
        self.order = order
        capacity = 16
        buffer = .allocate(capacity: capacity)
    }

    @usableFromInline
    mutating func destroy() {
        while count > 0 { _ = pop() }
        buffer.deallocate()
    }

    @inlinable
    mutating func push(_ item: Element) {
        if count == capacity { grow() }
        switch order {
        case .fifo, .lifo:
            (buffer + slot(count)).initialize(to: item)
            count += 1
        case .priority(let areInIncreasingOrder):
            (buffer + count).initialize(to: item)
            count += 1
            siftUp(from: count - 1, areInIncreasingOrder)
        }
    }

    /// Removes the next item in this storage's order. The caller checks `count > 0` first.
    @inlinable
    mutating func pop() -> Element {
        switch order {
        case .fifo:
            let item = (buffer + head).move()
            head = head + 1 == capacity ? 0 : head + 1
            count -= 1
            return item
        case .lifo:
            count -= 1
            return (buffer + slot(count)).move()
        case .priority(let areInIncreasingOrder):
            count -= 1
            if count == 0 { return buffer.move() }
            let smallest = buffer.move()
            buffer.moveInitialize(from: buffer + count, count: 1)
            siftDown(from: 0, areInIncreasingOrder)
            return smallest
        }
    }

    @inlinable @inline(__always)
    func slot(_ offset: Int) -> Int {
        let index = head + offset
        return index >= capacity ? index - capacity : index
    }

    @usableFromInline
    mutating func grow() {
        let newCapacity = capacity * 2
        let newBuffer = UnsafeMutablePointer<Element>.allocate(capacity: newCapacity)
        // Move the ring's two runs (or the heap's one) to the start of the new buffer.
        let firstRun = min(count, capacity - head)
        newBuffer.moveInitialize(from: buffer + head, count: firstRun)
        (newBuffer + firstRun).moveInitialize(from: buffer, count: count - firstRun)
        buffer.deallocate()
        buffer = newBuffer
        capacity = newCapacity
        head = 0
    }

    @inlinable
    mutating func siftUp(from start: Int, _ areInIncreasingOrder: (Element, Element) -> Bool) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard areInIncreasingOrder(buffer[child], buffer[parent]) else { return }
            swapAt(child, parent)
            child = parent
        }
    }

    @inlinable
    mutating func siftDown(from start: Int, _ areInIncreasingOrder: (Element, Element) -> Bool) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            guard left < count else { return }
            let right = left + 1
            var smallest = left
            if right < count, areInIncreasingOrder(buffer[right], buffer[left]) { smallest = right }
            guard areInIncreasingOrder(buffer[smallest], buffer[parent]) else { return }
            swapAt(smallest, parent)
            parent = smallest
        }
    }

    @inlinable
    func swapAt(_ i: Int, _ j: Int) {
        let item = (buffer + i).move()
        (buffer + i).moveInitialize(from: buffer + j, count: 1)
        (buffer + j).initialize(to: item)
    }
}
