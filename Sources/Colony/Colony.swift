// The library users import: `import Colony` brings the local core and the wire protocol's
// value types with it.
@_exported import ColonyWire
@_exported import MemoryMap
@_exported import Threading

/// This release of Colony.
public let colonyVersion = colonyReleaseVersion
