#include "mhcOpPlugin.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace mhc
{
namespace plugin
{
namespace
{
using nvinfer1::DataType;
using nvinfer1::DimsExprs;

// The first port whose dims are `dims` (or, with suffix, end in `dims`); -1 if none.
int32_t findPort(std::vector<Port> const& ports, char const* dims, bool suffix = false)
{
    for (size_t i = 0; i < ports.size(); ++i)
    {
        size_t const len = std::strlen(ports[i].dims);
        size_t const want = std::strlen(dims);
        char const* tail = ports[i].dims + (suffix && len >= want ? len - want : 0);
        if (std::strcmp(tail, dims) == 0)
        {
            return static_cast<int32_t>(i);
        }
    }
    return -1;
}

// "[T,n,d]" for dims "Tnd".
std::string bracketed(char const* dims)
{
    std::string s = "[";
    for (char const* p = dims; *p; ++p)
    {
        s += (p == dims ? "" : ",") + std::string(1, *p);
    }
    return s + "]";
}

// How the spec writes a weight dimension: "(2+n)*n" for M, "n*d" for K.
std::string formula(char code)
{
    return code == 'M' ? "(2+n)*n" : code == 'K' ? "n*d" : std::string(1, code);
}

// Every input has its port's rank; logs the expected shapes otherwise.
bool ranksOk(OpSpec const& op, DimsExprs const* in)
{
    for (size_t i = 0; i < op.inputs.size(); ++i)
    {
        if (in[i].nbDims != static_cast<int32_t>(std::strlen(op.inputs[i].dims)))
        {
            std::string expected;
            for (Port const& p : op.inputs)
            {
                expected += (expected.empty() ? "" : ", ") + std::string(p.name) + " " + bracketed(p.dims);
            }
            logError(std::string(op.name) + ": expected " + expected);
            return false;
        }
    }
    return true;
}

// x [T, d] against residual [T, n, d], once both d are constants.
bool xOk(OpSpec const& op, int32_t xi, int32_t ri, DimsExprs const* in)
{
    nvinfer1::IDimensionExpr const* xd = in[xi].d[1];
    nvinfer1::IDimensionExpr const* rd = in[ri].d[2];
    if (xd->isConstant() && rd->isConstant() && xd->getConstantValue() != rd->getConstantValue())
    {
        logError(std::string(op.name) + ": " + op.inputs[xi].name + " has d=" + std::to_string(xd->getConstantValue())
            + " but " + op.inputs[ri].name + " d=" + std::to_string(rd->getConstantValue()));
        return false;
    }
    return true;
}

// hc_fn [M or n, K] against residual [T, n, d], once both are build-time constants:
// n and d are fixed per engine by the weights, so a mismatch is refused here
// instead of reading out of bounds later.
bool weightsOk(OpSpec const& op, int32_t fi, int32_t ri, DimsExprs const* in)
{
    DimsExprs const& res = in[ri];
    DimsExprs const& fn = in[fi];
    if (!(res.d[1]->isConstant() && res.d[2]->isConstant() && fn.d[0]->isConstant() && fn.d[1]->isConstant()))
    {
        return true;
    }
    int64_t const n = res.d[1]->getConstantValue();
    int64_t const d = res.d[2]->getConstantValue();
    char const rowCode = op.inputs[fi].dims[0];
    int64_t const rows = rowCode == 'M' ? (2 + n) * n : n;
    int64_t const m = fn.d[0]->getConstantValue();
    int64_t const k = fn.d[1]->getConstantValue();
    if (m == rows && k == n * d)
    {
        return true;
    }
    logError(std::string(op.name) + ": " + op.inputs[fi].name + " is [" + std::to_string(m) + ", " + std::to_string(k)
        + "], expected [" + formula(rowCode) + ", " + formula('K') + "] = [" + std::to_string(rows) + ", "
        + std::to_string(n * d) + "] for " + op.inputs[ri].name + " n=" + std::to_string(n) + ", d=" + std::to_string(d));
    return false;
}

// An output's dims expressions, taken from its source input's by dimension code.
void setDims(DimsExprs& out, Port const& o, Port const& src, DimsExprs const& in)
{
    if (std::strcmp(o.dims, src.dims) == 0)
    {
        out = in;
        return;
    }
    out.nbDims = 0;
    for (char const* c = o.dims; *c; ++c)
    {
        out.d[out.nbDims++] = in.d[std::strchr(src.dims, *c) - src.dims];
    }
}

} // namespace

// ---- ops without fields --------------------------------------------------------

std::vector<FieldSpec> const& noFields()
{
    static std::vector<FieldSpec> const fields;
    return fields;
}

NoParams noParams(Fields const& /*fields*/)
{
    return {};
}

// ---- MhcPluginBase: identity, types, shapes, formats ---------------------------

MhcPluginBase::MhcPluginBase(OpSpec const& op, Fields const& fields)
    : MhcIdentity(op.name)
    , mOp(&op)
    , mFields(fields)
    , mFixed(std::max(findPort(op.inputs, "Tnd"), 0))
{
}

nvinfer1::IPluginCapability* MhcPluginBase::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

int32_t MhcPluginBase::getNbOutputs() const noexcept
{
    return static_cast<int32_t>(mOp->outputs.size());
}

Port const& MhcPluginBase::port(int32_t pos) const noexcept
{
    int32_t const nbIn = static_cast<int32_t>(mOp->inputs.size());
    return pos < nbIn ? mOp->inputs[pos] : mOp->outputs[pos - nbIn];
}

bool MhcPluginBase::checkCounts(int32_t nbInputs, int32_t nbOutputs) const noexcept
{
    int32_t const wantIn = static_cast<int32_t>(mOp->inputs.size());
    if (nbInputs == wantIn && nbOutputs == getNbOutputs())
    {
        return true;
    }
    logError(std::string(mPluginName) + ": expected " + std::to_string(wantIn) + " inputs and "
        + std::to_string(getNbOutputs()) + " outputs, got " + std::to_string(nbInputs) + " and "
        + std::to_string(nbOutputs));
    return false;
}

// Input 0 decides: float32 where its port says so (MhcSinkhorn's logits), else a
// residual dtype, which the kSAME_DTYPE input (x's residual), if any, shares.
bool MhcPluginBase::checkInputTypes(DataType const* types) const noexcept
{
    std::vector<Port> const& in = mOp->inputs;
    auto const same = std::find_if(in.begin(), in.end(), [](Port const& p) { return p.type == kSAME_DTYPE; });
    std::string problem;
    if (in[0].type == kFLOAT32)
    {
        problem = types[0] == DataType::kFLOAT ? "" : std::string(" must be float32, got ") + dataTypeName(types[0]);
    }
    else if (same == in.end())
    {
        problem = isResidualType(types[0])
            ? ""
            : std::string(" must be float32, float16 or bfloat16, got ") + dataTypeName(types[0]);
    }
    else if (!isResidualType(types[0]) || types[same - in.begin()] != types[0])
    {
        problem = std::string(" and ") + same->name + " must share one of float32, float16, bfloat16, got "
            + dataTypeName(types[0]) + " and " + dataTypeName(types[same - in.begin()]);
    }
    if (!problem.empty())
    {
        logError(std::string(mPluginName) + ": " + in[0].name + problem);
    }
    return problem.empty();
}

int32_t MhcPluginBase::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (!checkCounts(nbInputs, nbOutputs) || !checkInputTypes(inputTypes))
    {
        return -1;
    }
    for (int32_t i = 0; i < nbOutputs; ++i)
    {
        outputTypes[i] = mOp->outputs[i].type == kSAME_DTYPE ? inputTypes[0] : DataType::kFLOAT;
    }
    return 0;
}

bool MhcPluginBase::checkShapes(DimsExprs const* in) const noexcept
{
    if (mOp->checkShapes)
    {
        return mOp->checkShapes(in);
    }
    int32_t const xi = findPort(mOp->inputs, "Td");
    int32_t const fi = findPort(mOp->inputs, "K", true);
    return ranksOk(*mOp, in) && (xi < 0 || xOk(*mOp, xi, mFixed, in)) && (fi < 0 || weightsOk(*mOp, fi, mFixed, in));
}

int32_t MhcPluginBase::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    if (!checkCounts(nbInputs, nbOutputs) || !checkShapes(inputs))
    {
        return -1;
    }
    for (int32_t i = 0; i < nbOutputs; ++i)
    {
        Port const& o = mOp->outputs[i];
        int32_t const src = o.from < 0 ? mFixed : o.from;
        setDims(outputs[i], o, mOp->inputs[src], inputs[src]);
    }
    return 0;
}

bool MhcPluginBase::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != static_cast<int32_t>(mOp->inputs.size()) || nbOutputs != getNbOutputs() || pos < 0
        || pos >= nbInputs + nbOutputs)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& t = inOut[pos].desc;
    if (t.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (port(pos).type)
    {
    case kRESIDUAL_DTYPE: return isResidualType(t.type);
    case kSAME_DTYPE: return t.type == inOut[0].desc.type;
    default: return t.type == DataType::kFLOAT;
    }
}

// ---- MhcPluginBase: configure, workspace, enqueue, runtime ---------------------

int32_t MhcPluginBase::checkFixed(nvinfer1::PluginTensorDesc const& desc) const noexcept
{
    return mOp->checkFixed ? mOp->checkFixed(desc) : checkResidualShape(mPluginName, desc);
}

int32_t MhcPluginBase::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    // desc.dims may hold -1 here (network time); the profile's min/max are concrete.
    nvinfer1::PluginTensorDesc atMax{};
    return checkCounts(nbInputs, nbOutputs) && profileDesc(mPluginName, in[mFixed], &atMax) ? checkFixed(atMax) : -1;
}

int32_t MhcPluginBase::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    return checkCounts(nbInputs, nbOutputs) ? checkFixed(in[mFixed]) : -1;
}

size_t MhcPluginBase::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (nbInputs != static_cast<int32_t>(mOp->inputs.size()) || inputs[mFixed].max.nbDims != 3 || !mOp->workspace)
    {
        return 0;
    }
    // Sized at the profile's max T: the kernel's bound holds for any smaller T.
    nvinfer1::Dims const& mx = inputs[mFixed].max;
    return mOp->workspace(mx.d[0], static_cast<int32_t>(mx.d[1]), static_cast<int32_t>(mx.d[2]),
        toMhcDtype(inputs[mFixed].desc.type));
}

int32_t MhcPluginBase::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs, void* workspace,
    cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& dims = inputDesc[mFixed].dims;
    if (dims.d[0] == 0)
    {
        return 0; // T = 0 is a valid call that does nothing
    }
    KernelCall call{dims.d[0], static_cast<int32_t>(dims.d[1]), static_cast<int32_t>(dims.d[2]),
        toMhcDtype(inputDesc[mFixed].type), inputs, outputs, workspace, 0, stream};
    call.workspaceSize = mOp->workspace ? mOp->workspace(call.t, call.n, call.d, call.dtype) : 0;
    mhcStatus_t const st = launch(call);
    return st == MHC_STATUS_SUCCESS ? 0 : reportKernelFailure(mPluginName, mOp->kernel, st);
}

nvinfer1::IPluginV3* MhcPluginBase::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

nvinfer1::PluginFieldCollection const* MhcPluginBase::getFieldsToSerialize() noexcept
{
    try
    {
        return mFields.serialize();
    }
    catch (std::exception const& e)
    {
        logError(std::string(mPluginName) + ": getFieldsToSerialize: " + e.what());
        return nullptr;
    }
}

// ---- MhcCreatorBase ---------------------------------------------------------------

MhcCreatorBase::MhcCreatorBase(OpSpec op)
    : MhcIdentity(op.name)
    , mOp(std::move(op))
    , mNames(mOp.fields)
{
}

nvinfer1::IPluginV3* MhcCreatorBase::createPlugin(
    char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept
{
    try
    {
        Fields fields(&mOp.fields);
        std::string error;
        if (!fields.parse(mPluginName, fc, &error))
        {
            logError(error + (phase == nvinfer1::TensorRTPhase::kRUNTIME ? " (runtime phase, serialized fields)" : "")
                + (name ? std::string(" [layer ") + name + "]" : std::string()));
            return nullptr;
        }
        return make(fields);
    }
    catch (std::exception const& e)
    {
        logError(std::string(mPluginName) + ": createPlugin: " + e.what());
    }
    catch (...)
    {
        logError(std::string(mPluginName) + ": createPlugin: unknown exception");
    }
    return nullptr;
}

} // namespace plugin
} // namespace mhc
