// MhcSinkhorn: logits [T,n,n] float32 -> comb [T,n,n] float32
// (contract: shared/spec/mhc_ops.md). Kernel call, plugin and creator.
#include "mhcPluginCommon.h"

#include <exception>
#include <string>

namespace mhc
{
namespace plugin
{
namespace
{
char const* const kNAME = "MhcSinkhorn";

std::vector<FieldSpec> const kFIELDS = {
    {"iters", FieldKind::kINT, FieldRule::kAT_LEAST_ONE, 20},
    {"eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
};

constexpr int32_t kNB_IN = 1;
constexpr int32_t kNB_OUT = 1;

class MhcSinkhornPlugin final : public MhcPlugin<MhcSinkhornPlugin, kNB_IN, kNB_OUT, 0>
{
public:
    explicit MhcSinkhornPlugin(Fields const& fields)
        : MhcPlugin(kNAME, fields)
        , mIters(fields.getInt("iters"))
        , mEps(fields.getFloat("eps"))
    {
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT))
        {
            return -1;
        }
        if (inputTypes[0] != nvinfer1::DataType::kFLOAT)
        {
            logError(std::string(kNAME) + ": logits must be float32, got " + dataTypeName(inputTypes[0]));
            return -1;
        }
        outputTypes[0] = nvinfer1::DataType::kFLOAT;
        return 0;
    }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT))
        {
            return -1;
        }
        nvinfer1::DimsExprs const& in = inputs[0];
        if (in.nbDims != 3)
        {
            logError(std::string(kNAME) + ": logits must be [T, n, n], got rank " + std::to_string(in.nbDims));
            return -1;
        }
        if (in.d[1]->isConstant() && in.d[2]->isConstant()
            && in.d[1]->getConstantValue() != in.d[2]->getConstantValue())
        {
            logError(std::string(kNAME) + ": logits must be square per token, got [T, "
                + std::to_string(in.d[1]->getConstantValue()) + ", " + std::to_string(in.d[2]->getConstantValue())
                + "]");
            return -1;
        }
        outputs[0] = in;
        return 0;
    }

    bool supportsFormat(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut) const noexcept override
    {
        nvinfer1::PluginTensorDesc const& t = inOut[pos].desc;
        return t.format == nvinfer1::TensorFormat::kLINEAR && t.type == nvinfer1::DataType::kFLOAT;
    }

    int32_t launch(KernelCall const& c) noexcept override
    {
        mhcStatus_t const st = mhcSinkhorn(
            static_cast<float const*>(c.inputs[0]), static_cast<float*>(c.outputs[0]), c.t, c.n, mIters, mEps, c.stream);
        return st == MHC_STATUS_SUCCESS ? 0 : reportKernelFailure(kNAME, "mhcSinkhorn", st);
    }

private:
    int32_t checkStatic(nvinfer1::PluginTensorDesc const& in) const noexcept override
    {
        nvinfer1::Dims const& d = in.dims;
        if (d.nbDims != 3 || d.d[1] <= 0 || d.d[1] != d.d[2] || d.d[1] > MHC_MAX_STREAMS)
        {
            logError(std::string(kNAME) + ": logits must be [T, n, n] with a fixed n in 1.."
                + std::to_string(MHC_MAX_STREAMS));
            return -1;
        }
        return 0;
    }

    int32_t mIters;
    float mEps;
};
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcSinkhornCreator() noexcept
{
    static MhcCreator<MhcSinkhornPlugin> creator(kNAME, kFIELDS);
    return &creator;
}

} // namespace plugin
} // namespace mhc
