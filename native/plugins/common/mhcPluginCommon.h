// Helpers shared by the mHC TensorRT plugins: the logger handed over by
// setLoggerFinder, plugin-field parsing and validation, field serialization,
// dtype mapping, and the IPluginV3 plumbing that is identical for every op.
//
// Only TensorRT's headers are used (pure-virtual interfaces and inline code),
// so the library never needs libnvinfer at link or load time.
#ifndef MHC_PLUGIN_COMMON_H
#define MHC_PLUGIN_COMMON_H

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <cstdint>
#include <exception>
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

// ---- IPluginV3 plumbing ----------------------------------------------------
// Each op's class derives from this and keeps its own shapes, formats and
// kernel call; the capability lookup, identity and field serialization are
// the same for all four.
class MhcPluginBase : public nvinfer1::IPluginV3,
                      public nvinfer1::IPluginV3OneCore,
                      public nvinfer1::IPluginV3OneBuild,
                      public nvinfer1::IPluginV3OneRuntime
{
public:
    MhcPluginBase(char const* pluginName, Fields const& fields);
    MhcPluginBase(MhcPluginBase const&) = default;
    ~MhcPluginBase() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override
    {
        return mPluginName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return kPLUGIN_VERSION;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kPLUGIN_NAMESPACE;
    }

    // IPluginV3OneRuntime: every execution context gets its own copy, so
    // per-context state (the shapes of onShapeChange) is never shared.
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

protected:
    // Checks the common input/output counts; logs and returns false if wrong.
    bool checkCounts(int32_t nbInputs, int32_t nbOutputs, int32_t wantIn, int32_t wantOut) const noexcept;

    char const* mPluginName;
    Fields mFields;
};

// The creator plumbing shared by the four ops.
class MhcCreatorBase : public nvinfer1::IPluginCreatorV3One
{
public:
    MhcCreatorBase(char const* pluginName, std::vector<FieldSpec> const& specs);

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return mNames.get();
    }
    char const* getPluginName() const noexcept override
    {
        return mPluginName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return kPLUGIN_VERSION;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kPLUGIN_NAMESPACE;
    }

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

protected:
    // Builds the op's plugin from validated fields.
    virtual nvinfer1::IPluginV3* make(Fields const& fields) = 0;

    char const* mPluginName;
    std::vector<FieldSpec> const& mSpecs;
    FieldNames mNames;
};

// A residual-like tensor [T, n, d]: n and d must be build-time constants that
// the kernels support (mhcCheckShape). Logs and returns -1 otherwise.
int32_t checkResidualShape(char const* plugin, nvinfer1::PluginTensorDesc const& res) noexcept;

// configurePlugin's view of an input: its type and format with the profile's
// max dims, after checking that every dim but the first (T) is the same at the
// profile's min and max (n and d are fixed per engine). Logs and returns false
// otherwise.
bool profileDesc(char const* plugin, nvinfer1::DynamicPluginTensorDesc const& in, nvinfer1::PluginTensorDesc* out) noexcept;

// One enqueue of an op's kernel, T > 0: T, n, d and the dtype are those of the
// input whose dims are fixed per engine (the residual, or Sinkhorn's logits).
struct KernelCall
{
    int64_t t;
    int32_t n;
    int32_t d;
    mhcDtype_t dtype;
    void const* const* inputs;
    void* const* outputs;
    void* workspace;
    cudaStream_t stream;
};

// What every plugin shares beyond MhcPluginBase: clone, the output count, the
// configure/shape-change checks, the count and position checks of the format
// negotiation, the workspace query and the start of enqueue. They differ
// between ops only in which input carries the static dims (StaticInput) and
// in what the op supplies: how that input is checked (checkStatic), which
// types each position takes (supportsFormat), its kernel's workspace
// (workspaceSize) and its kernel call (launch).
template <typename Derived, int32_t NbIn, int32_t NbOut, int32_t StaticInput>
class MhcPlugin : public MhcPluginBase
{
public:
    using MhcPluginBase::MhcPluginBase;

    nvinfer1::IPluginV3* clone() noexcept override
    {
        try
        {
            return new Derived(static_cast<Derived const&>(*this));
        }
        catch (std::exception const& e)
        {
            logError(std::string(mPluginName) + ": clone: " + e.what());
            return nullptr;
        }
    }

    int32_t getNbOutputs() const noexcept override
    {
        return NbOut;
    }

    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override
    {
        // desc.dims may hold -1 here (network time); the profile's min/max are concrete.
        nvinfer1::PluginTensorDesc atMax{};
        return checkCounts(nbInputs, nbOutputs, NbIn, NbOut) && profileDesc(mPluginName, in[StaticInput], &atMax)
            ? checkStatic(atMax)
            : -1;
    }

    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override
    {
        return checkCounts(nbInputs, nbOutputs, NbIn, NbOut) ? checkStatic(in[StaticInput]) : -1;
    }

    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override
    {
        if (nbInputs != NbIn || nbOutputs != NbOut || pos < 0 || pos >= NbIn + NbOut)
        {
            return false;
        }
        return supportsFormat(pos, inOut);
    }

    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept override
    {
        if (nbInputs != NbIn || inputs[StaticInput].max.nbDims != 3)
        {
            return 0;
        }
        // Sized at the profile's max T: the kernel's bound holds for any smaller T.
        nvinfer1::Dims const& mx = inputs[StaticInput].max;
        return workspaceSize(mx.d[0], static_cast<int32_t>(mx.d[1]), static_cast<int32_t>(mx.d[2]),
            toMhcDtype(inputs[StaticInput].desc.type));
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* /*outputDesc*/,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override
    {
        nvinfer1::Dims const& dims = inputDesc[StaticInput].dims;
        if (dims.d[0] == 0)
        {
            return 0; // T = 0 is a valid call that does nothing
        }
        KernelCall const call{dims.d[0], static_cast<int32_t>(dims.d[1]), static_cast<int32_t>(dims.d[2]),
            toMhcDtype(inputDesc[StaticInput].type), inputs, outputs, workspace, stream};
        return launch(call);
    }

protected:
    // Validates the input whose dims are fixed per engine; logs and returns -1 if bad.
    virtual int32_t checkStatic(nvinfer1::PluginTensorDesc const& desc) const noexcept = 0;

    // Whether position pos (in range, counts checked) takes inOut[pos]'s type
    // and format, given the positions before it.
    virtual bool supportsFormat(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut) const noexcept = 0;

    // The kernel's workspace for T tokens (none unless the op says so).
    virtual size_t workspaceSize(int64_t /*t*/, int32_t /*n*/, int32_t /*d*/, mhcDtype_t /*dtype*/) const noexcept
    {
        return 0;
    }

    // The kernel call; 0, or the status of reportKernelFailure.
    virtual int32_t launch(KernelCall const& call) noexcept = 0;
};

// The creator of one op: the shared plumbing plus "new Plugin(fields)".
template <typename Plugin>
class MhcCreator final : public MhcCreatorBase
{
public:
    MhcCreator(char const* pluginName, std::vector<FieldSpec> const& specs)
        : MhcCreatorBase(pluginName, specs)
    {
    }

protected:
    nvinfer1::IPluginV3* make(Fields const& fields) override
    {
        return new Plugin(fields);
    }
};

// Creators of the four ops (defined next to each plugin).
nvinfer1::IPluginCreatorV3One* getMhcPreCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcSinkhornCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcPostCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcHeadCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcPostPreCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcPostHeadCreator() noexcept;
// DeepSeek-V4.1 (native/plugins/common/mhcV41.h).
nvinfer1::IPluginCreatorV3One* getMhcMixCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcCollapseCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcPostMixCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcPostCollapseCreator() noexcept;

} // namespace plugin
} // namespace mhc

#endif // MHC_PLUGIN_COMMON_H
