// Helpers shared by the mHC TensorRT plugins: the logger handed over by
// setLoggerFinder, plugin-field parsing and validation, field serialization,
// dtype mapping and the residual's shape checks. The plugin class and creator
// that every op shares: mhcOpPlugin.h.
//
// Only TensorRT's headers are used (pure-virtual interfaces and inline code),
// so the library never needs libnvinfer at link or load time.
#ifndef MHC_PLUGIN_COMMON_H
#define MHC_PLUGIN_COMMON_H

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <cstdint>
#include <string>
#include <vector>

#include "mhc_kernels.h"

// One number for version tests: 10.16 -> 10016, 11.1 -> 11001.
#define MHC_TRT_VERSION (NV_TENSORRT_MAJOR * 1000 + NV_TENSORRT_MINOR)
#if MHC_TRT_VERSION < 10000
#error "the mHC plugins use IPluginV3 and need TensorRT 10 or newer headers"
#endif

namespace mhc
{
namespace plugin
{

constexpr char const* kPLUGIN_NAMESPACE = "mhc";
constexpr char const* kPLUGIN_VERSION = "1";

// ---- logging ---------------------------------------------------------------
// TensorRT owns the ILoggerFinder and may hand a new one at any time; the
// logger is looked up at each message because TensorRT may replace it.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
void logError(std::string const& msg) noexcept;
void logWarning(std::string const& msg) noexcept;
void logVerbose(std::string const& msg) noexcept;

// ---- plugin fields ---------------------------------------------------------
enum class FieldKind : int32_t
{
    kFLOAT, // PluginFieldType::kFLOAT32, one value
    kINT,   // PluginFieldType::kINT32, one value
};

// What a value must satisfy; checked when a plugin is created in either phase,
// so that a corrupt or hand-edited engine is refused as loudly as a bad node.
enum class FieldRule : int32_t
{
    kNON_NEGATIVE_FINITE, // eps terms: 0 is allowed (the math stays defined)
    kPOSITIVE_FINITE,     // post_mult
    kAT_LEAST_ONE,        // iteration counts
};

struct FieldSpec
{
    char const* name;
    FieldKind kind;
    FieldRule rule;
    double defaultValue;
};

union FieldValue
{
    float f;
    int32_t i;
};

// Field values of one plugin instance, in the order of its FieldSpec table.
class Fields
{
public:
    Fields(std::vector<FieldSpec> const* specs);
    Fields(Fields const& other);
    Fields& operator=(Fields const& other);

    // Starts from the defaults and applies fc. On a bad field returns false
    // with *error naming the field; unknown fields are errors. The string
    // fields plugin_namespace / plugin_version are accepted (a parser may pass
    // them) but must then say "mhc" / "1".
    bool parse(char const* pluginName, nvinfer1::PluginFieldCollection const* fc, std::string* error);

    float getFloat(char const* name) const;
    int32_t getInt(char const* name) const;

    // Stable until the next call or until this object is destroyed.
    nvinfer1::PluginFieldCollection const* serialize();

private:
    int32_t indexOf(char const* name) const;

    std::vector<FieldSpec> const* mSpecs;
    std::vector<FieldValue> mValues;
    std::vector<nvinfer1::PluginField> mSerialized;
    nvinfer1::PluginFieldCollection mCollection{};
};

// The creator's getFieldNames() collection for a spec table (static lifetime).
class FieldNames
{
public:
    explicit FieldNames(std::vector<FieldSpec> const& specs);
    nvinfer1::PluginFieldCollection const* get() const noexcept
    {
        return &mCollection;
    }

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

// ---- dtypes ----------------------------------------------------------------
bool isResidualType(nvinfer1::DataType t) noexcept;
mhcDtype_t toMhcDtype(nvinfer1::DataType t) noexcept;
char const* dataTypeName(nvinfer1::DataType t) noexcept;

// Logs "<plugin>: <what> failed: <status>: <detail>" for a kernel API failure.
int32_t reportKernelFailure(char const* plugin, char const* what, mhcStatus_t status) noexcept;

// configurePlugin's view of an input: its type and format with the profile's
// max dims, after checking that every dim but the first (T) is the same at the
// profile's min and max (n and d are fixed per engine). Logs and returns false
// otherwise.
bool profileDesc(char const* plugin, nvinfer1::DynamicPluginTensorDesc const& in, nvinfer1::PluginTensorDesc* out) noexcept;

} // namespace plugin
} // namespace mhc

#endif // MHC_PLUGIN_COMMON_H
