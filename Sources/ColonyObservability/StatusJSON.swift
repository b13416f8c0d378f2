import ColonyWire
import Foundation

extension WireValue {
    /// A value as text for tables (`colony status`) and map keys in JSON.
    public var plainText: String {
        switch self {
        case .null: "-"
        case .string(let text): text
        case .int(let number): String(number)
        case .uint(let number): String(number)
        case .double(let number): String(number)
        case .bool(let flag): String(flag)
        default: "\(self)"
        }
    }

    /// The value as Foundation JSON objects (bytes become hex strings).
    public var jsonObject: Any {
        switch self {
        case .null: NSNull()
        case .bool(let flag): flag
        case .int(let number): number
        case .uint(let number): number
        case .double(let number): number.isFinite ? number : NSNull()
        case .string(let text): text
        case .bytes(let bytes): AuthKey.hex(bytes)
        case .array(let elements): elements.map(\.jsonObject)
        case .map(let pairs): Dictionary(pairs.map { ($0.key.plainText, $0.value.jsonObject) }, uniquingKeysWith: { $1 })
        case .objectRef(let reference): ["type": reference.type.name, "id": reference.id] as [String: Any]
        }
    }

    /// The value as JSON text, keys sorted (`colony status --json`, `/api/status`).
    public func jsonData(pretty: Bool = false) throws -> Data {
        try JSONSerialization.data(withJSONObject: jsonObject, options: pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes])
    }
}
