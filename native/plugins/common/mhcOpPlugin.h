// The one plugin class and creator of every mHC op, driven by the op's table
// (OpSpec), as TensorRT OSS keeps what its plugins share in plugin/common/.
//
// An op's folder supplies only what is truly its own: its OpSpec (name, kernel
// name, fields, input and output ports, workspace query), how its fields become
// the kernel's parameters and its kernel call. From the ports the shared code
// derives the output types and shapes, the format negotiation, the shape checks
// and which input carries the dims fixed per engine.
#ifndef MHC_OP_PLUGIN_H
#define MHC_OP_PLUGIN_H

#include "mhcPluginCommon.h"

#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace mhc
{
namespace plugin
{

// The dtype a port takes (all linear).
enum PortType : int32_t
{
    kFLOAT32,        // always float32: mixes, weights, logits
    kRESIDUAL_DTYPE, // input 0 only: picks the residual dtype (float32, float16 or bfloat16)
    kSAME_DTYPE,     // the dtype input 0 picked
};

// One input or output. dims holds one code per dimension, as in the spec:
// T tokens, n streams, d width, M = (2+n)*n, K = n*d, or a digit.
//  - inputs: one rule checks them all: every code has one value across the
//    inputs (M, K and digits the value n and d give them). "Tnd" marks the
//    residual, whose n and d are fixed per engine (an op without one,
//    MhcSinkhorn, fixes its input 0).
//  - outputs: each dimension is the fixed input's of that code, else the first
//    input's that has it.
struct Port
{
    char const* name;
    char const* dims;
    PortType type{kFLOAT32};
};

using WorkspaceFn = size_t (*)(int64_t t, int32_t n, int32_t d, mhcDtype_t dtype);

// Everything about an op that the plugin class reads.
struct OpSpec
{
    char const* name;   // plugin name = ONNX op type
    char const* kernel; // the C API call, named when it fails
    std::vector<FieldSpec> const& fields;
    std::vector<Port> inputs;
    std::vector<Port> outputs;
    WorkspaceFn workspace{nullptr}; // nullptr: the kernel takes none
};

// One enqueue of an op's kernel, T > 0: T, n, d and the dtype are those of the
// fixed input; workspaceSize is OpSpec::workspace at this T.
struct KernelCall
{
    int64_t t;
    int32_t n;
    int32_t d;
    mhcDtype_t dtype;
    void const* const* inputs;
    void* const* outputs;
    void* workspace;
    size_t workspaceSize;
    cudaStream_t stream;

    float const* f32In(int32_t i) const noexcept
    {
        return static_cast<float const*>(inputs[i]);
    }
    float* f32Out(int32_t i) const noexcept
    {
        return static_cast<float*>(outputs[i]);
    }
};

// The fields shared by several ops, and the kernel parameters read from them.
// MhcPre's (mhcPrePlugin.cpp) are also MhcPostPre's, MhcMix's and MhcPostMix's
// (V4.1-Flash writes rms_eps = 1e-20 explicitly; any finite value >= 0 is
// accepted); MhcHead's (mhcHeadPlugin.cpp) are also MhcPostHead's.
std::vector<FieldSpec> const& preFields();
mhcPreParams preParams(Fields const& fields);
std::vector<FieldSpec> const& headFields();
mhcHeadParams headParams(Fields const& fields);
struct NoParams
{
};
std::vector<FieldSpec> const& noFields(); // any field passed is an error
NoParams noParams(Fields const& fields);

// getPluginName / Version / Namespace, which the plugin (IPluginV3OneCore) and
// its creator (IPluginCreatorV3One) each declare.
template <typename Interface>
class MhcIdentity : public Interface
{
public:
    explicit MhcIdentity(char const* name)
        : mPluginName(name)
    {
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

protected:
    char const* mPluginName;
};

// Every IPluginV3 method, from the op's table; a subclass adds clone and the
// kernel call. Every execution context gets its own copy (attachToContext), so
// per-context state is never shared; nothing is kept between enqueues.
class MhcPluginBase : public nvinfer1::IPluginV3,
                      public MhcIdentity<nvinfer1::IPluginV3OneCore>,
                      public nvinfer1::IPluginV3OneBuild,
                      public nvinfer1::IPluginV3OneRuntime
{
public:
    MhcPluginBase(OpSpec const& op, Fields const& fields);
    MhcPluginBase(MhcPluginBase const&) = default;
    ~MhcPluginBase() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

protected:
    // The op's kernel call with its parameters.
    virtual mhcStatus_t launch(KernelCall const& call) noexcept = 0;

private:
    // Input and output counts as the op has them; logs and returns false otherwise.
    bool checkCounts(int32_t nbInputs, int32_t nbOutputs) const noexcept;
    bool checkInputTypes(nvinfer1::DataType const* inputTypes) const noexcept;
    bool checkShapes(nvinfer1::DimsExprs const* inputs) const noexcept;
    int32_t checkFixed(nvinfer1::PluginTensorDesc const& desc) const noexcept;
    bool checkAll(nvinfer1::PluginTensorDesc const* inputs) const noexcept;
    nvinfer1::IDimensionExpr const* dimExpr(char code, nvinfer1::DimsExprs const* inputs) const noexcept;
    Port const& port(int32_t pos) const noexcept;

    OpSpec const* mOp;
    Fields mFields;
    int32_t mFixed; // the input whose dims other than T are fixed per engine
};

// An op's plugin: its kernel parameters, read once from the fields, and its call.
template <typename Params>
class MhcPlugin final : public MhcPluginBase
{
public:
    using Launch = mhcStatus_t (*)(Params const& params, KernelCall const& call);

    MhcPlugin(OpSpec const& op, Fields const& fields, Params const& params, Launch fn)
        : MhcPluginBase(op, fields)
        , mParams(params)
        , mLaunch(fn)
    {
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        try
        {
            return new MhcPlugin(*this);
        }
        catch (std::exception const& e)
        {
            logError(std::string(mPluginName) + ": clone: " + e.what());
            return nullptr;
        }
    }

protected:
    mhcStatus_t launch(KernelCall const& call) noexcept override
    {
        return mLaunch(mParams, call);
    }

private:
    Params mParams;
    Launch mLaunch;
};

// The creator plumbing: field names, and createPlugin parsing and checking the
// fields in either phase before make() builds the plugin.
class MhcCreatorBase : public MhcIdentity<nvinfer1::IPluginCreatorV3One>
{
public:
    explicit MhcCreatorBase(OpSpec op);

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return mNames.get();
    }
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

protected:
    // Builds the op's plugin from validated fields.
    virtual nvinfer1::IPluginV3* make(Fields const& fields) = 0;

    OpSpec const mOp; // the plugins it makes point here
    FieldNames mNames;
};

// The creator of one op: its table, how its fields become kernel parameters
// and its kernel call.
template <typename Params>
class MhcCreator final : public MhcCreatorBase
{
public:
    using ReadParams = Params (*)(Fields const& fields);

    MhcCreator(OpSpec op, ReadParams readParams, typename MhcPlugin<Params>::Launch launch)
        : MhcCreatorBase(std::move(op))
        , mReadParams(readParams)
        , mLaunch(launch)
    {
    }

protected:
    nvinfer1::IPluginV3* make(Fields const& fields) override
    {
        return new MhcPlugin<Params>(mOp, fields, mReadParams(fields), mLaunch);
    }

private:
    ReadParams mReadParams;
    typename MhcPlugin<Params>::Launch mLaunch;
};

// The creators, defined in each op's folder.
nvinfer1::IPluginCreatorV3One* getMhcPreCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcSinkhornCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcPostCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcHeadCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcPostPreCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcPostHeadCreator() noexcept;
// DeepSeek-V4.1 (spec "DeepSeek-V4.1").
nvinfer1::IPluginCreatorV3One* getMhcMixCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcCollapseCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcPostMixCreator() noexcept;
nvinfer1::IPluginCreatorV3One* getMhcPostCollapseCreator() noexcept;

} // namespace plugin
} // namespace mhc

#endif // MHC_OP_PLUGIN_H
